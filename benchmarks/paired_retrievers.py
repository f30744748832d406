"""Two retrievers of a recorded RAG run on the same questions: each hit@k and MRR, their difference and its 95%
paired-bootstrap interval by passage (the one raglab.experiments.compare puts on pull requests), and on how many questions they differ.

    python benchmarks/paired_retrievers.py results/real-cpu-rag bm25 hybrid
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from raglab.evaluation.intervals import cluster_of, paired_bootstrap


@click.command()
@click.argument("record", type=click.Path(file_okay=False, path_type=Path))
@click.argument("first")
@click.argument("second")
@click.option("--split", default="test", show_default=True)
def main(record: Path, first: str, second: str, split: str) -> None:
    folder = record / "score" / "rag" / split / "retrieval"
    rows = {name: {r["id"]: r for r in map(json.loads, (folder / f"{name}.jsonl").read_text().splitlines())}
            for name in (first, second)}
    ids = sorted(rows[first].keys() & rows[second].keys())
    metrics = [k for k, v in rows[first][ids[0]].items() if isinstance(v, float)]
    click.echo(f"{record.name} {split}: {len(ids)} questions, {first} vs {second}")
    click.echo(f"{'metric':<8} {first:>8} {second:>8} {'delta':>7}  95% interval     questions differing")
    for metric in metrics:
        a = np.array([rows[first][i][metric] for i in ids])
        b = np.array([rows[second][i][metric] for i in ids])
        low, high = paired_bootstrap(a, b, [cluster_of(i) for i in ids])  # questions resampled by passage
        click.echo(f"{metric:<8} {a.mean() * 100:>8.2f} {b.mean() * 100:>8.2f} {(b - a).mean() * 100:>+7.2f}  "
                   f"[{low * 100:+.2f}, {high * 100:+.2f}]   {int((a != b).sum())} "
                   f"({int((b > a).sum())} better, {int((b < a).sum())} worse)")


if __name__ == "__main__":
    main()
