"""The RAG system: a knowledge base, its retrievers, and the generator's prompt filled with what they found.

One implementation for the scored system (serve_infer@rag) and the assistant people talk to
(``raglab.assistant``): the retrievers are ``bm25`` (jieba words), ``base`` (the untuned
embedder of params ``embedder``), ``tuned`` (train_embed's model) and ``hybrid`` (reciprocal-rank
fusion of the retrievers named in ``serve_infer.rag.hybrid.of``); the top ``top_k`` passages,
joined by newlines, fill the ``{context}`` of the same prompt template the generator was trained
with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .formats import DataError, read_jsonl, require_text, write_jsonl
from .prompts import chat_messages, render
from .retrieval import (
    BM25Index,
    DenseIndex,
    EmbedderConfig,
    Ranking,
    encode_passages,
    encode_queries,
    load_embedder,
    reciprocal_rank_fusion,
)

log = logging.getLogger("raglab")

RETRIEVERS = ("bm25", "base", "tuned", "hybrid")
PASSAGE_SEPARATOR = "\n"


def unique_passages(rows: Sequence[dict]) -> list[str]:
    """The knowledge base of an eval split: each ``context`` once, in order of first appearance."""
    return list(dict.fromkeys(r["context"] for r in rows))


def write_kb(path: str | os.PathLike, passages: Sequence[str]) -> int:
    """A knowledge base as JSON lines ``{"id", "text"}`` (CMRC passages may hold newlines)."""
    return write_jsonl(path, ({"id": i, "text": t} for i, t in enumerate(passages)))


def read_kb(path: str | os.PathLike) -> list[str]:
    rows = read_jsonl(path)
    if not rows:
        raise DataError(path, "the knowledge base is empty")
    return [require_text(r, "text", path, i) for i, r in enumerate(rows, start=1)]


@dataclass
class Retrievers:
    """The retrievers over one knowledge base; each embedder is loaded and the passages encoded once."""

    kb: list[str]
    params: dict[str, Any]
    tuned_embedder: str | os.PathLike | None = None  # train_embed's folder; None: no ``tuned`` retriever
    shared: Retrievers | None = None  # another knowledge base's retrievers, whose loaded embedders are reused

    def __post_init__(self):
        self._bm25: BM25Index | None = None
        self._dense: dict[str, DenseIndex] = {}  # the knowledge base encoded by each embedder
        self._embedders: dict[str, Any] = self.shared._embedders if self.shared is not None else {}

    def available(self) -> list[str]:
        return [r for r in RETRIEVERS if r != "tuned" or self.tuned_embedder is not None]

    def embedder(self, name: str):
        if name not in self._embedders:
            overrides = {"model": str(self.tuned_embedder), "revision": None} if name == "tuned" else {}
            self._embedders[name] = load_embedder(EmbedderConfig.from_params(self.params, **overrides))
        return self._embedders[name]

    def search(self, name: str, queries: list[str], k: int) -> list[Ranking]:
        """Top-``k`` passages (index, score) per query, best first."""
        if name not in self.available():
            raise ValueError(f"unknown retriever {name!r} (available: {self.available()})")
        if name == "bm25":
            if self._bm25 is None:
                self._bm25 = BM25Index(self.kb)
            return self._bm25.search(queries, k)
        if name == "hybrid":
            hybrid = self.params["serve_infer"]["rag"]["hybrid"]
            if "hybrid" in hybrid["of"]:
                raise ValueError("serve_infer.rag.hybrid.of cannot name hybrid itself")
            # every input ranks the whole knowledge base, so fusion sees each passage's rank in each
            inputs = [self.search(r, queries, len(self.kb)) for r in hybrid["of"]]
            return reciprocal_rank_fusion(inputs, k, hybrid["rrf_k"], hybrid["weights"])
        if name not in self._dense:
            self._dense[name] = DenseIndex(encode_passages(self.embedder(name), self.kb))
        return self._dense[name].rank(encode_queries(self.embedder(name), queries), k)


def rag_messages(prompt: dict, question: str, passages: Sequence[str]) -> list[dict]:
    """The generator's conversation: the training template with the retrieved passages as the context."""
    return chat_messages(prompt["system"], render(prompt["template"], PASSAGE_SEPARATOR.join(passages), question))
