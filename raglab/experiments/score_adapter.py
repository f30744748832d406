"""Score a recorded run's LoRA adapter on other GSM8K questions, nothing retrained.

    python -m raglab.experiments.score_adapter results/real-cpu-math-cot --questions gsm8k/test.jsonl \\
        --limit 200 --out runs/cot-on-test

``--questions`` is a file in GSM8K's upstream format (JSON Lines with ``question`` and ``answer``, the gold after
``####``). The pipeline's own stage scripts do the work, with the record's params (today's defaults for groups
added since the run): ``download_model llm`` materialises the record's base LLM (unless ``--base`` names a folder),
``serve_infer_math`` serves base + the record's ``llm-adapter/`` and answers, ``score_math`` scores (strict and
lenient accuracy, unclosed share, answer lengths). Everything lands in ``--out``; a step whose output is there is
skipped, so an interrupted run resumes (the answers also come from the response cache).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import yaml

from raglab.core.formats import DataError, read_jsonl, write_jsonl
from raglab.experiments.records import record_params, run_stage
from raglab.generator.maths import GoldError, gold_answer
from raglab.params.schema import validate


def eval_rows(questions_file: Path, limit: int | None) -> tuple[list[dict], int]:
    """serve_infer_math's eval rows (``id``, ``question``, ``gold``) of the first ``limit`` usable questions, and
    how many were dropped for a missing question or a gold that is not a number."""
    rows, dropped = [], 0
    for i, row in enumerate(read_jsonl(questions_file), start=1):
        if "question" not in row or "answer" not in row:
            raise DataError(questions_file, "missing", row=i, field="question" if "question" not in row else "answer")
        try:
            gold = gold_answer(row["answer"] or "")
        except GoldError:
            dropped += 1
            continue
        if not (row["question"] or "").strip():
            dropped += 1
            continue
        rows.append({"id": f"{questions_file.stem}-{i}", "question": row["question"], "gold": gold})
        if limit is not None and len(rows) == limit:
            break
    return rows, dropped


def write_params(record: Path, out: Path, systems: list[str]) -> Path:
    """The record's params (checked against today's schema) with the systems to ask, in ``out/params.yaml``."""
    params = record_params(record)
    params["serve_infer"]["math"]["systems"] = systems
    validate(params, str(record / "params.yaml"))
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@click.command()
@click.argument("record", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--questions", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="GSM8K-format JSON Lines (question, answer with the gold after ####).")
@click.option("--limit", type=int, help="Score the first N usable questions only.")
@click.option("--systems", default="sft", show_default=True, help="Comma-separated: sft, base.")
@click.option("--base", "base_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The base LLM folder (default: materialised from the record's params into OUT/llm).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def main(record: Path, questions: Path, limit: int | None, systems: str, base_dir: Path | None, out: Path) -> None:
    """Score RECORD's adapter (results/RUN) on other maths questions."""
    adapter = record / "llm-adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise click.ClickException(f"{record} holds no LoRA adapter ({adapter}/adapter_config.json)")
    out.mkdir(parents=True, exist_ok=True)
    params_file = write_params(record, out, [s.strip() for s in systems.split(",") if s.strip()])
    rows, dropped = eval_rows(questions, limit)
    if not rows:
        raise click.ClickException(f"{questions}: no question with a numeric gold answer")
    write_jsonl(out / "eval" / "eval.jsonl", rows)
    click.echo(f"{questions}: {len(rows)} questions, {dropped} dropped (no question or no numeric gold)")
    p = ["--params", str(params_file)]
    if base_dir is None:
        base_dir = out / "llm"
        run_stage(["stages.download_model", "llm", *p], base_dir, "base LLM materialised")
    run_stage(["stages.serve_infer_math", *p, "--eval", str(out / "eval"), "--base", str(base_dir),
               "--adapter", str(adapter)], out / "infer", "answers of serve_infer_math")
    subprocess.run([sys.executable, "-m", "stages.score_math", *p, "--infer", str(out / "infer"),
                    "--metrics", str(out / "metrics.json"), "--plot", str(out / "plot.csv"),
                    "--per-query", str(out / "score")], check=True)
    click.echo(json.dumps(json.loads((out / "metrics.json").read_text(encoding="utf-8")), indent=2))


if __name__ == "__main__":
    main()
