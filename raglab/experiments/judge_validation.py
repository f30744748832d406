"""Validate a judge: build the judge-validation set (``raglab.evaluation.judge_set``) from a mirror's CMRC
passages, and run a judge over it exactly as ``score_rag`` does (ragas through the response cache), writing its
ROC AUC, accuracy and cost per answer per metric.

    python -m raglab.experiments.judge_validation build --mirror ../shared/datasets --out data/judge-set.jsonl
    python -m raglab.experiments.judge_validation score data/judge-set.jsonl --profile cpu-qwen \\
        -S score.rag.judge.kind=served --judge-model models/base/llm --out results/judge-validation/qwen-0.5b.json
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import click

from raglab.core.formats import read_jsonl, write_json, write_jsonl
from raglab.core.report import StageReport
from raglab.data.sources import MIRROR_READERS, mirror_file
from raglab.evaluation.judge import judge_scores
from raglab.evaluation.judge_set import LABELS, build_items, judge_report
from raglab.experiments.profiles import profile_params


@click.group()
def main() -> None:
    """Build the judge-validation set, and score a judge on it."""


@main.command()
@click.option("--mirror", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--split", default="validation", show_default=True, help="The CMRC split whose passages are used.")
@click.option("--passages", default=80, show_default=True, help="Passages sampled (1-4 items each).")
@click.option("--seed", default=1314, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def build(mirror: str, split: str, passages: int, seed: int, out: str) -> None:
    """Write the set (JSON Lines) and print its size per kind and its sha256."""
    items = build_items(list(MIRROR_READERS["cmrc2018"](mirror_file(mirror, "cmrc2018", split))), passages, seed)
    write_jsonl(out, items)
    kinds = {k: sum(i["kind"] == k for i in items) for k in LABELS}
    digest = hashlib.sha256(Path(out).read_bytes()).hexdigest()
    click.echo(f"{out}: {len(items)} items {kinds}, sha256 {digest}")


@main.command()
@click.argument("items_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--profile", default=None, help="Profiles over params.yaml (serving and score.rag.judge).")
@click.option("-S", "--set-param", "assignments", multiple=True, help="group.key=value over those.")
@click.option("--judge-model", default=None, type=click.Path(file_okay=False), help="A served judge's model.")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def score(items_file: str, profile: str | None, assignments: tuple[str, ...], judge_model: str | None,
          out: str) -> None:
    """Judge every item as score_rag would, and write the judge's AUC and accuracy per metric."""
    params = profile_params(profile, assignments)
    items = read_jsonl(items_file)
    report = StageReport("judge_set")
    start = time.perf_counter()
    verdicts = judge_scores(params.score.rag.judge, judge_model, params.serving, params.score.generation.cosine_embedder,
                            items, Path(out).parent / "judge-log", report)
    seconds = time.perf_counter() - start
    result = {"items": items_file, "judge": params.score.rag.judge.model_dump(), "judge_model": judge_model,
              "seconds_per_answer": round(seconds / len(items), 2), **judge_report(items, verdicts),
              "missing_verdicts": report.extra.get("judge_missing_verdicts", {})}
    write_json(out, result)
    click.echo(result)


if __name__ == "__main__":
    main()
