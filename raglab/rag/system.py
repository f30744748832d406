"""The RAG system: a knowledge base, its retrievers, the router, and the generator's prompt filled with what
they found.

``RagSystem.build`` is the one constructor of the scored system (serve_infer_rag) and of the assistant people
talk to (``raglab.assistant``), both from params ``rag``: the retrievers are those of
``raglab.retriever.systems`` (bm25, base, tuned, hybrid, each optionally reranked: ``hybrid+rerank``); the top
``top_k`` passages, joined by newlines, fill the ``{context}`` of the same prompt template the generator was
trained with. When a reranker's threshold keeps no passage, the system answers that its knowledge base has none
for the question (params ``rag.no_passage``, in the question's language) and the generator is not asked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from raglab.core.prompts import chat_messages, render
from raglab.data.chunks import language
from raglab.params.pipeline import Prompt
from raglab.params.schema import Params
from raglab.rag.routing import EmbeddingRouter, router_messages
from raglab.retriever.search import Ranking
from raglab.retriever.systems import Retrievers

log = logging.getLogger("raglab")

PASSAGE_SEPARATOR = "\n"


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
              tuned_reranker: str | os.PathLike | None = None, router_dir: str | os.PathLike | None = None,
              shared: RagSystem | None = None, llm: str | os.PathLike | None = None,
              adapter: str | os.PathLike | None = None) -> RagSystem:
        """The system over ``kb``: with the ``tuned`` retriever when train_embed's folder is given, ``+rerank`` when
        train_rerank's is, the LLM rerankers when the base LLM's folder ``llm`` is (and train_llm's ``adapter``, for
        rerank.llm.model sft), the embedding router saved in ``router_dir`` (or ``shared``'s, whose loaded models
        are reused too)."""
        retrievers = Retrievers(kb, params, tuned_embedder, tuned_reranker,
                                shared=shared.retrievers if shared else None, llm=llm, adapter=adapter)
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

    def no_passage_answer(self, question: str) -> str:
        """What the system answers when no passage passed the reranker's threshold: that its knowledge base has no
        passage that answers ``question``, in the question's language."""
        return getattr(self.params.rag.no_passage, language(question))
