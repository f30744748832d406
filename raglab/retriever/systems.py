"""The retrievers over one knowledge base, by name, as params ``serve_infer.retrieval.systems``,
``rag.retrievers`` and ``assistant.retriever`` name them: a first stage, ``bm25`` (jieba words), ``base``
(the untuned embedder of params ``embedder``), ``tuned`` (train_embed's model) or ``hybrid``
(reciprocal-rank fusion of the retrievers of ``rag.hybrid.of``), optionally followed by a second stage,
``+rerank`` (train_rerank's cross-encoder), ``+base_rerank`` (the untuned one of params ``reranker``),
``+query_likelihood`` or ``+yes_no`` (the LLM of params ``rerank.llm``: download@llm's, with train_llm's adapter
for ``sft``, or an endpoint), which reorders the first stage's ``rerank.candidates`` best passages
(``tuned+rerank``, ``hybrid+query_likelihood``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from raglab.params.rerank import FIRST_STAGES, LLM_RERANKERS, second_stage
from raglab.params.schema import Params
from raglab.retriever.rerank import NOT_TRAINED, CrossEncoderReranker, Reranker, RerankerConfig
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


@dataclass
class Retrievers:
    """The retrievers over one knowledge base; each model is loaded and the passages encoded once."""

    kb: list[str]
    params: Params
    tuned_embedder: str | os.PathLike | None = None  # train_embed's folder; None: no ``tuned`` retriever
    tuned_reranker: str | os.PathLike | None = None  # train_rerank's folder; None: no ``+rerank``
    shared: Retrievers | None = None  # another knowledge base's retrievers, whose loaded models are reused
    llm: str | os.PathLike | None = None  # download@llm's folder: the LLM rerankers' local model
    adapter: str | os.PathLike | None = None  # train_llm's LoRA adapter (rerank.llm.model sft)
    models: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self):
        self._bm25: BM25Index | None = None
        self._dense: dict[str, DenseIndex] = {}  # the knowledge base encoded by each embedder
        if self.shared is not None:
            self.models = self.shared.models
        if self.tuned_reranker is not None and (Path(self.tuned_reranker) / NOT_TRAINED).is_file():
            self.tuned_reranker = None  # train_rerank.enabled was false: no ``+rerank``

    def available(self) -> list[str]:
        firsts = [r for r in FIRST_STAGES if r != "tuned" or self.tuned_embedder is not None]
        seconds = ["", "+base_rerank"] + (["+rerank"] if self.tuned_reranker is not None else [])
        seconds += [f"+{kind}" for kind in LLM_RERANKERS if self._llm_ready()]
        return [first + second for second in seconds for first in firsts]

    def _llm_ready(self) -> bool:
        model = self.params.rerank.llm.model
        return model == "endpoint" or (self.llm is not None and (model == "base" or self.adapter is not None))

    def embedder(self, name: str):
        if name not in self.models:
            overrides = {"model": str(self.tuned_embedder), "revision": None} if name == "tuned" else {}
            self.models[name] = load_embedder(EmbedderConfig.of(self.params.embedder, **overrides))
        return self.models[name]

    def reranker(self, name: str) -> Reranker:
        """``rerank`` (train_rerank's cross-encoder), ``base_rerank``, or an LLM reranker (``query_likelihood``,
        ``yes_no``; both share one loaded LLM); ``.seconds`` times each query."""
        if name not in self.models:
            rerank = self.params.rerank
            if name in LLM_RERANKERS:
                from raglab.retriever.llm_rerank import LLMReranker

                self.models[name] = LLMReranker(name, rerank.llm, self.llm_scorer())
            else:
                overrides = {"model": str(self.tuned_reranker), "revision": None} if name == "rerank" else {}
                self.models[name] = CrossEncoderReranker(RerankerConfig.of(self.params.reranker, **overrides),
                                                         rerank.precision)
        return self.models[name]

    def llm_scorer(self):
        """The LLM rerankers' model, loaded once: the local LLM (with the adapter for ``sft``) or the endpoint."""
        if "llm" not in self.models:
            llm, serving = self.params.rerank.llm, self.params.serving
            if llm.endpoint is not None:
                from raglab.retriever.llm_endpoint import EndpointLLM

                self.models["llm"] = EndpointLLM(llm.endpoint, llm.batch_size, serving.timeout_s, serving.max_retries)
            else:
                from raglab.retriever.llm_rerank import LocalLLM

                self.models["llm"] = LocalLLM.load(self.llm, self.adapter if llm.model == "sft" else None, llm,
                                                   self.params.rerank.precision, self.params.llm.trust_remote_code)
        return self.models["llm"]

    def release_llm(self) -> None:
        """Free the LLM rerankers' model (before the generators are served, which need the memory)."""
        for name in ("llm", *LLM_RERANKERS):
            self.models.pop(name, None)

    def rerank_seconds(self, name: str, n: int) -> list[float]:
        """The seconds the second stage of retriever ``name`` took for each of its last ``n`` queries (none for a
        first stage alone)."""
        second = second_stage(name)
        return self.reranker(second).seconds[-n:] if second else []

    def search(self, name: str, queries: list[str], k: int) -> list[Ranking]:
        """Top-``k`` passages (index, score) per query, best first."""
        if name not in self.available():
            raise ValueError(f"unknown retriever {name!r} (available: {self.available()})")
        first, _, second = name.partition("+")
        if second:
            rerank = self.params.rerank
            candidates = self.search(first, queries, max(rerank.candidates, k))
            reranker = self.reranker(second)
            pairs = tqdm(zip(queries, candidates), total=len(queries), desc=f"reranking ({name})",
                         disable=len(queries) < 2)  # a batch shows progress; the assistant's single query does not
            return [reranker.rerank(q, c, self.kb, k, rerank) for q, c in pairs]
        if name == "bm25":
            if self._bm25 is None:
                self._bm25 = BM25Index(self.kb)
            return self._bm25.search(queries, k)
        if name == "hybrid":
            hybrid = self.params.rag.hybrid
            # every input ranks the whole knowledge base, so fusion sees each passage's rank in each
            inputs = [self.search(r, queries, len(self.kb)) for r in hybrid.of]
            return reciprocal_rank_fusion(inputs, k, hybrid.rrf_k, hybrid.weights)
        if name not in self._dense:
            self._dense[name] = DenseIndex(encode_passages(self.embedder(name), self.kb))
        return self._dense[name].rank(encode_queries(self.embedder(name), queries), k)
