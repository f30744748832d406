"""Dense retrieval: encode with an embedding model, search with faiss.

Encoding goes through FlagEmbedding's ``FlagModel`` (the inference side of the
trainer used in ``train_embed``), so pooling, normalisation and the query
instruction are the same at training and at retrieval time. Search is exact
inner product over L2-normalised vectors, i.e. cosine similarity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

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

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> EmbedderConfig:
        """The ``embedder`` parameter group, optionally with some fields replaced."""
        return cls(**{**params["embedder"], **overrides})

    def local_path(self) -> str:
        """The model's directory: ``model`` itself when local, else the hub snapshot at ``revision``."""
        from .models import local_folder

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


def retrieve(embedder: Any, queries: list[str], kb: list[str], k: int) -> list[list[dict]]:
    """Top-``k`` knowledge-base passages per query, best first, with cosine scores."""
    index = DenseIndex(encode_passages(embedder, kb))
    scores, ids = index.search(encode_queries(embedder, queries), k)
    return [
        [{"text": kb[j], "score": round(float(s), 6)} for s, j in zip(row_s, row_i) if j >= 0]
        for row_s, row_i in zip(scores, ids)
    ]
