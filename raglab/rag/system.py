"""The RAG system: a knowledge base, its retrievers, the router, and the generator's prompt filled with what
they found.

``RagSystem.build`` is the one constructor of the scored system (serve_infer_rag) and of the assistant people
talk to (``raglab.assistant``), both from params ``rag``: the retrievers are ``bm25`` (jieba words), ``base`` (the untuned
embedder of params ``embedder``), ``tuned`` (train_embed's model) and ``hybrid`` (reciprocal-rank
fusion of the retrievers named in ``rag.hybrid.of``); the top ``top_k`` passages,
joined by newlines, fill the ``{context}`` of the same prompt template the generator was trained
with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raglab.core.prompts import chat_messages, render
from raglab.params.pipeline import Prompt
from raglab.params.schema import Params
from raglab.rag.routing import EmbeddingRouter, router_messages
from raglab.retriever.search import (
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


@dataclass
class Retrievers:
    """The retrievers over one knowledge base; each embedder is loaded and the passages encoded once."""

    kb: list[str]
    params: Params
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
            self._embedders[name] = load_embedder(EmbedderConfig.of(self.params.embedder, **overrides))
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
            hybrid = self.params.rag.hybrid
            if "hybrid" in hybrid.of:
                raise ValueError("rag.hybrid.of cannot name hybrid itself")
            # every input ranks the whole knowledge base, so fusion sees each passage's rank in each
            inputs = [self.search(r, queries, len(self.kb)) for r in hybrid.of]
            return reciprocal_rank_fusion(inputs, k, hybrid.rrf_k, hybrid.weights)
        if name not in self._dense:
            self._dense[name] = DenseIndex(encode_passages(self.embedder(name), self.kb))
        return self._dense[name].rank(encode_queries(self.embedder(name), queries), k)


def rag_messages(prompt: Prompt, question: str, passages: Sequence[str]) -> list[dict]:
    """The generator's conversation: the training template with the retrieved passages as the context."""
    return chat_messages(prompt.system, render(prompt.template, PASSAGE_SEPARATOR.join(passages), question))


@dataclass
class RagSystem:
    """The RAG system of params ``rag`` over one knowledge base: its retrievers, its router and its prompt."""

    params: Params
    retrievers: Retrievers
    router: EmbeddingRouter | None = None  # the embedding router; None: the llm router (a chat model classifies)

    @classmethod
    def build(cls, params: Params, kb: list[str], *, tuned_embedder: str | os.PathLike | None = None,
              router_dir: str | os.PathLike | None = None, shared: RagSystem | None = None) -> RagSystem:
        """The system over ``kb``: with the ``tuned`` retriever when train_embed's folder is given, the embedding
        router saved in ``router_dir`` (or ``shared``'s, whose loaded embedders are reused too)."""
        retrievers = Retrievers(kb, params, tuned_embedder, shared=shared.retrievers if shared else None)
        router = shared.router if shared else None
        if router_dir is not None and params.rag.router.kind == "embedding":
            router = EmbeddingRouter.load(router_dir, retrievers.embedder("base"))
        return cls(params, retrievers, router)

    def fit_router(self, math_questions: Sequence[str], rag_questions: Sequence[str]) -> EmbeddingRouter:
        """Train the embedding router on the base embedder's vectors of the two routes' questions."""
        self.router = EmbeddingRouter.fit(self.retrievers.embedder("base"), math_questions, rag_questions,
                                          self.params.rag.seed)
        return self.router

    def router_chats(self, questions: Sequence[str]) -> list[list[dict]]:
        """What the llm router asks a chat model about each question (its reply: ``route_from_reply``)."""
        r = self.params.rag.router
        return [router_messages(r.prompt, self.params.prompt.system, q) for q in questions]

    def rank(self, retriever: str, questions: list[str], k: int | None = None) -> list[Ranking]:
        """Each question's top ``k`` passages (index, score), best first; ``rag.top_k`` when not given."""
        return self.retrievers.search(retriever, questions, k or self.params.rag.top_k)

    def generator_chat(self, question: str, passages: Sequence[str]) -> list[dict]:
        return rag_messages(self.params.prompt, question, passages)
