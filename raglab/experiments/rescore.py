"""Re-score a recorded run with today's scorers, from the answers its per-query files hold: nothing is retrained
or asked again. It adds what the scorers gained since the run: ``em_any`` and CMRC's official ``em_official`` and
``f1`` (golds of every annotator, looked up by question id in the mirror's CMRC files), the cosine columns of
``score.generation`` (the params given, e.g. a CPU profile's multilingual embedder and the MiniLM of the record's
time), and ``context_relevance_sentences``
(from each query's top-1 passage, when the record scored the top 1). It rewrites the per-query files, the
record's metrics and ``results/metrics.json``.

    python -m raglab.experiments.rescore results/real-cpu-generator --mirror ../shared/datasets --profile cpu-qwen
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from raglab.core.formats import read_jsonl, write_json, write_jsonl
from raglab.data.sources import MIRROR_FILES, MIRROR_READERS, mirror_file
from raglab.evaluation.answers import EXACT_METRICS, CosineColumns, exact_scores
from raglab.evaluation.metrics import context_relevance, mean_scores
from raglab.experiments.profiles import profile_params
from raglab.experiments.records import write_baseline
from raglab.params.loader import read_yaml


def cmrc_golds(mirror: str) -> dict[str, list[str]]:
    """Question id -> every annotator's answer (distinct, stripped), over the mirror's CMRC splits."""
    golds: dict[str, list[str]] = {}
    for split in MIRROR_FILES["cmrc2018"]:
        try:
            path = mirror_file(mirror, "cmrc2018", split)
        except FileNotFoundError:  # a split this mirror does not hold
            continue
        for row in MIRROR_READERS["cmrc2018"](Path(path)):
            golds[str(row["id"])] = list(dict.fromkeys(a.strip() for a in row["answers"] if a and a.strip()))
    return golds


def rescore_answers(rows: list[dict], golds: dict[str, list[str]], columns: CosineColumns) -> list[dict]:
    missing = [r["id"] for r in rows if r["id"] not in golds]
    if missing:
        raise click.ClickException(f"{len(missing)} question ids not in the mirror's CMRC files (first: {missing[0]})")
    cosines = columns.score([r["prediction"] for r in rows], [r["gold"] for r in rows])
    return [{**r, "golds": golds[r["id"]], **exact_scores(r["prediction"], r["gold"], golds[r["id"]]), **c}
            for r, c in zip(rows, cosines)]


def _means(rows: list[dict], metrics: dict) -> dict:
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    means = mean_scores([{k: r[k] for k in keys} for r in rows])
    return {**metrics, **{k: round(v, 5) for k, v in means.items() if k in metrics or k in EXACT_METRICS
                          or k.startswith("cosine")}}


def rescore_record(record: Path, golds: dict[str, list[str]], columns: CosineColumns | None) -> list[str]:
    """Re-score every per-query file of ``record``; the names of the files rewritten."""
    done = []
    for track in ("generation", "rag"):
        metrics_file = record / "metrics" / f"{track}.json"
        for path in sorted((record / "score" / track).glob("*/*.jsonl")):
            if columns is None:
                raise click.ClickException(f"{path}: answers to score need --profile (the cosine embedders)")
            rows = rescore_answers(read_jsonl(path), golds, columns)
            write_jsonl(path, rows)
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            split, system = path.parent.name, path.stem
            metrics[split][system] = _means(rows, metrics[split][system])
            write_json(metrics_file, metrics)
            done.append(str(path))
    for path in sorted((record / "score" / "retrieval").glob("*.jsonl")):
        top_n = read_yaml(record / "params.yaml")["score"]["retrieval"]["context_top_n"]  # a record's own schema
        if top_n != 1:
            raise click.ClickException(f"{path}: scored at context_top_n {top_n}; its rows keep only the top 1")
        rows = read_jsonl(path)
        systems = [k for k, v in rows[0].items() if isinstance(v, dict)]
        for r in rows:
            for s in systems:
                r[s]["context_relevance_sentences"] = context_relevance([r[s]["top1"]], r["gold"], None)
        write_jsonl(path, rows)
        metrics_file = record / "metrics" / "retrieval.json"
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        for s in systems:
            values = [r[s]["context_relevance_sentences"] for r in rows]
            metrics[path.stem][s]["context_relevance_sentences"] = round(sum(values) / len(values), 5)
        write_json(metrics_file, metrics)
        done.append(str(path))
    return done


@click.command()
@click.argument("records", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--mirror", required=True, type=click.Path(file_okay=False, exists=True),
              help="The dataset mirror the records ran on (CMRC ids -> every annotator's answer).")
@click.option("--profile", default=None, help="Profiles (A or A,B) over params.yaml whose score.generation names "
              "the cosine embedders (e.g. cpu-qwen); needed where a record holds answers.")
def main(records: tuple[Path, ...], mirror: str, profile: str | None) -> None:
    """Re-score RECORDS (results/NAME folders) from their per-query files, and write results/metrics.json."""
    golds = cmrc_golds(mirror)
    columns = CosineColumns(profile_params(profile).score.generation) if profile else None
    for record in records:
        for name in rescore_record(record, golds, columns):
            click.echo(f"re-scored {name}")
    write_baseline(records[0].parent)


if __name__ == "__main__":
    main()
