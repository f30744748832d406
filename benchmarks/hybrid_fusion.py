"""Choose the hybrid retriever's fusion on a validation slice: hit@k and MRR of BM25 (jieba words), the tuned
embedder, and their reciprocal-rank fusion for a grid of weights of the embedder's ranking (BM25's weight 1).

The slice is an experiment's retrieval-track validation split (`data/embed/val`: questions of training passages
held out of the embedder's training, profile `validate`), with that experiment's tuned embedder, both read out
of DVC's cache; the eval questions play no part. For the cpu-rag profile (`make select-cpu-rag` first):

    python benchmarks/hybrid_fusion.py --rev select-rag-chosen
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from raglab.evaluation.metrics import hit_at, mrr_at
from raglab.experiments.dvc import experiment_files
from raglab.rag.system import Retrievers


@click.command()
@click.option("--rev", default="select-rag-chosen", show_default=True, help="An experiment run with profile validate.")
@click.option("--split", default="val", show_default=True)
@click.option("--weights", default="1,0.7,0.5,0.3,0.2,0.1", show_default=True,
              help="Weights of the tuned embedder's ranking to try (BM25's is 1).")
@click.option("--rrf-k", default=60, show_default=True)
def main(rev: str, split: str, weights: str, rrf_k: int) -> None:
    import yaml

    files = experiment_files(rev, {"params": "params.yaml", "embedder": "models/embedder",
                                   "split": f"data/embed/{split}"}, Path(".cache/benchmarks"))
    params = yaml.safe_load(files["params"].read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (files["split"] / "eval.jsonl").read_text().splitlines()]
    kb = (files["split"] / "kb.txt").read_text(encoding="utf-8").splitlines()
    gold = [kb.index(r["corpus"][0]) for r in rows]
    questions = [r["query"] for r in rows]
    retrievers = Retrievers(kb, params, files["embedder"])

    def report(name: str, rankings) -> None:
        ranks = [next((i for i, (j, _) in enumerate(r, start=1) if j == g), None) for r, g in zip(rankings, gold)]
        scores = [sum(hit_at(rank, k) for rank in ranks) / len(ranks) * 100 for k in (1, 3, 5)]
        mrr = sum(mrr_at(rank, 10) for rank in ranks) / len(ranks)
        click.echo(f"{name:<34} {scores[0]:>6.2f} {scores[1]:>6.2f} {scores[2]:>6.2f} {mrr:>7.3f}")

    click.echo(f"{rev} {split}: {len(rows)} questions, {len(kb)} passages")
    click.echo(f"{'retriever':<34} {'hit@1':>6} {'hit@3':>6} {'hit@5':>6} {'MRR@10':>7}")
    full = {name: retrievers.search(name, questions, len(kb)) for name in ("bm25", "tuned")}
    for name, rankings in full.items():
        report(name, rankings)
    from raglab.retriever.search import reciprocal_rank_fusion

    for w in (float(x) for x in weights.split(",")):
        fused = reciprocal_rank_fusion([full["bm25"], full["tuned"]], len(kb), rrf_k, [1.0, w])
        report(f"hybrid (tuned weight {w:g}, k {rrf_k})", fused)


if __name__ == "__main__":
    main()
