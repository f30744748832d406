"""The second stage of retrieval: a reranker scores each query with each of the first stage's candidates and
orders them by its score (the brief's two-stage retrieval: the embedder recalls fast, the reranker orders
precisely). ``Reranker`` is what every kind shares (ordering, fusion, threshold, timing); the cross-encoder is
here, the LLM rerankers in ``raglab.retriever.llm_rerank``.

Scoring goes through sentence-transformers' ``CrossEncoder`` over the folder FlagEmbedding's reranker trainer
writes (``AutoModelForSequenceClassification`` with one label; train_rerank), with a sigmoid on the logit, so
a score is in (0, 1) and the brief's threshold filter (keep what scores above 0.85) reads it directly.
A first-stage weight > 0 (params ``rerank.first_stage_weight`` for the cross-encoder, ``rerank.llm.<kind>`` for
an LLM) fuses the reranker's order with the first stage's (reciprocal-rank fusion, as the hybrid retriever fuses
BM25 and the embedder): a weak reranker then breaks the first stage's near-ties instead of overruling it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from raglab.params.pipeline import Reranker as RerankerParams
from raglab.params.rerank import Rerank
from raglab.retriever.search import Ranking, reciprocal_rank_fusion

HEAD_SEED = 0
NOT_TRAINED = "NOT_TRAINED.md"  # the note train_rerank leaves in its folder when train_rerank.enabled is false


@dataclass
class RerankerConfig:
    model: str
    revision: str | None = None
    max_len: int = 512
    query_instruction: str | None = None
    batch_size: int = 32
    trust_remote_code: bool = False

    @classmethod
    def of(cls, group: RerankerParams, **overrides: Any) -> RerankerConfig:
        """Params ``reranker``, some fields replaced (``model`` by train_rerank's folder for the tuned one)."""
        return cls(**{**group.model_dump(include=set(cls.__dataclass_fields__)), **overrides})

    def local_path(self) -> str:
        """The model's directory: ``model`` itself when local, else the hub snapshot at ``revision``."""
        from raglab.models.base import local_folder

        if local_folder(self.model, "reranker model") is not None or not self.revision:
            return self.model
        from huggingface_hub import snapshot_download

        return snapshot_download(self.model, revision=self.revision)


class Reranker(ABC):
    """What every reranker shares: ``scores`` (one per passage, higher is more relevant) ordered, fused with the
    first stage's ranks and filtered by the threshold of its ``kind``; ``seconds`` holds each query's time."""

    kind = "rerank"  # the second stage's name whose threshold and first-stage weight apply (Rerank.keeps)
    seconds: list[float]

    @abstractmethod
    def scores(self, query: str, passages: list[str]) -> list[float]:
        """One score per passage for ``query``, on the scale of the reranker's kind."""

    def rerank(self, query: str, candidates: Ranking, kb: list[str], k: int, params: Rerank) -> Ranking:
        """``candidates`` (indices into ``kb``, best first) ordered by the reranker's score, or by its fusion with
        their first-stage rank (its kind's first-stage weight > 0; the scores are then the fused ones), the best
        ``k`` of those whose own score is above its kind's threshold (None: all); ties keep the first stage's
        order."""
        threshold, first_stage_weight = params.keeps(self.kind)
        start = time.perf_counter()
        scores = dict(zip((j for j, _ in candidates), self.scores(query, [kb[j] for j, _ in candidates])))
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        if first_stage_weight > 0:
            ranked = reciprocal_rank_fusion([[ranked], [candidates]], len(ranked), params.rrf_k,
                                            [1.0, first_stage_weight])[0]
        self.seconds.append(time.perf_counter() - start)
        return [(j, s) for j, s in ranked if threshold is None or scores[j] > threshold][:k]


class CrossEncoderReranker(Reranker):
    """A cross-encoder scoring (query, passage) pairs; ``seconds`` holds the time each ``rerank`` query took."""

    def __init__(self, cfg: RerankerConfig, precision: str = "fp32"):
        """``precision``: fp32, bf16, fp16 or auto (bf16 on a GPU or a CPU with AMX / AVX512-BF16, else fp32)."""
        import torch
        from sentence_transformers import CrossEncoder

        from raglab.core.machine import resolve_precision

        self.cfg = cfg
        gpu = torch.cuda.is_available()
        self.precision = resolve_precision(precision, "reranker", gpu=gpu)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        with torch.random.fork_rng(devices=[]):  # a base model without a scoring head gets the same fresh one each run
            torch.manual_seed(HEAD_SEED)
            self.model = CrossEncoder(cfg.local_path(), num_labels=1, max_length=cfg.max_len,
                                      device="cuda" if gpu else "cpu", model_kwargs={"dtype": dtype},
                                      trust_remote_code=cfg.trust_remote_code, activation_fn=torch.nn.Sigmoid())
        self.seconds: list[float] = []

    def scores(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        q = f"{self.cfg.query_instruction}{query}" if self.cfg.query_instruction else query
        out = self.model.predict([(q, p) for p in passages], batch_size=self.cfg.batch_size, show_progress_bar=False)
        return [float(s) for s in out]
