"""Parameter groups of the second stage of retrieval (``rerank``) and the retriever names that use it.

A retriever is a first stage, optionally followed by a second: ``+rerank`` / ``+base_rerank`` (the tuned / untuned
cross-encoder) or ``+query_likelihood`` / ``+yes_no`` (the LLM of ``rerank.llm`` scoring each pair). Each kind of
score has its own scale, so each kind has its own threshold and first-stage weight, checked against that scale:
the cross-encoder's sigmoid and yes/no's P(yes) are in (0, 1), query likelihood's mean log-probability is below 0.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from raglab.params.pipeline import Group, PositiveInt

FIRST_STAGES = ("bm25", "base", "tuned", "hybrid")  # what recalls: BM25, the base / tuned embedder, their fusion
CROSS_ENCODERS = ("rerank", "base_rerank")  # the tuned cross-encoder (train_rerank) | the base one
LLM_RERANKERS = ("query_likelihood", "yes_no")  # the LLM of rerank.llm, by the score it reads
RERANKERS = CROSS_ENCODERS + LLM_RERANKERS
LANGUAGES = ("en", "zh")  # a prompt per language, chosen by the question's (raglab.data.chunks.language)


def _retriever(v: str) -> str:
    first, plus, second = v.partition("+")
    if first not in FIRST_STAGES or (plus and second not in RERANKERS):
        raise ValueError(f"a retriever is one of {', '.join(FIRST_STAGES)}, optionally followed by +rerank (the "
                         f"tuned cross-encoder reorders its candidates), +base_rerank (the untuned one), "
                         f"+query_likelihood or +yes_no (the LLM of rerank.llm scores them), got {v!r}")
    return v


Retriever = Annotated[str, AfterValidator(_retriever)]  # e.g. hybrid, tuned+rerank, bm25+query_likelihood


def second_stage(retriever: str) -> str:
    """The second stage of a retriever name, "" for a first stage alone."""
    return retriever.partition("+")[2]


def _fields(template: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", template))


class LogprobEndpoint(Group):
    """An OpenAI-compatible server the LLM rerankers ask. ``prompt_logprobs``: it returns the log-probabilities
    of the prompt's tokens (vLLM's ``prompt_logprobs`` and ``/tokenize``), which query likelihood reads."""
    base_url: str
    model: str
    api_key_env: str | None
    prompt_logprobs: bool


class ByLanguage(Group):
    """One value per language the prompts come in."""
    en: str
    zh: str


class AnswersByLanguage(Group):
    en: list[str]
    zh: list[str]


class QueryLikelihood(Group):
    """UPR: the mean log-probability of the question's tokens after the passage and ``prompt`` (a user turn with
    ``{passage}``; the question is the assistant's turn). ``threshold``: keep passages scoring above it (< 0)."""
    prompt: ByLanguage
    threshold: float | None = Field(lt=0)
    first_stage_weight: float = Field(ge=0)

    @model_validator(mode="after")
    def _prompts(self) -> QueryLikelihood:
        for lang in LANGUAGES:
            if _fields(getattr(self.prompt, lang)) != {"passage"}:
                raise ValueError(f"prompt.{lang} must use exactly {{passage}} (the question is the assistant's "
                                 f"turn that is scored), got {getattr(self.prompt, lang)!r}")
        return self


class YesNo(Group):
    """Pointwise relevance: P(yes) / (P(yes) + P(no)) for the first token of ``answers`` (yes, then no) as the
    assistant's reply to ``prompt`` (``{passage}`` and ``{question}``). ``threshold``: in (0, 1)."""
    prompt: ByLanguage
    answers: AnswersByLanguage
    threshold: float | None = Field(gt=0, lt=1)
    first_stage_weight: float = Field(ge=0)

    @model_validator(mode="after")
    def _prompts(self) -> YesNo:
        for lang in LANGUAGES:
            if _fields(getattr(self.prompt, lang)) != {"passage", "question"}:
                raise ValueError(f"prompt.{lang} must use exactly {{passage}} and {{question}}, "
                                 f"got {getattr(self.prompt, lang)!r}")
            words = getattr(self.answers, lang)
            if len(words) != 2 or not all(w.strip() for w in words) or words[0] == words[1]:
                raise ValueError(f"answers.{lang} must be two different words, the one that says relevant first "
                                 f"(quote Yes and No in YAML), got {words!r}")
        return self


class LlmRerank(Group):
    """The LLM rerankers' model and prompts: ``model`` base (download@llm's folder), sft (with train_llm's LoRA
    adapter) or endpoint (``endpoint``); pairs scored ``batch_size`` at a time (an endpoint: that many requests
    in flight), passages cut to ``passage_max_tokens`` of the local model's tokens."""
    model: Literal["base", "sft", "endpoint"]
    endpoint: LogprobEndpoint | None
    system: str | None
    batch_size: int = PositiveInt()
    passage_max_tokens: int = PositiveInt()
    query_likelihood: QueryLikelihood
    yes_no: YesNo

    @model_validator(mode="after")
    def _endpoint(self) -> LlmRerank:
        if (self.model == "endpoint") != (self.endpoint is not None):
            raise ValueError("model endpoint asks rerank.llm.endpoint, and only it: set both or neither")
        return self


class Rerank(Group):
    """The second stage of retrieval: the reranker of a retriever's name reorders the first stage's ``candidates``
    best passages and keeps those scoring above its kind's threshold (null: all). With its kind's
    ``first_stage_weight`` > 0 the order fuses both ranks: 1 / (rrf_k + reranker rank) + first_stage_weight /
    (rrf_k + first-stage rank). ``threshold`` and ``first_stage_weight`` here are the cross-encoder's (its sigmoid
    score); ``llm`` holds the LLM rerankers'. ``precision``: the cross-encoder's and the local LLM's at inference."""
    candidates: int = PositiveInt()
    threshold: float | None = Field(gt=0, lt=1)
    first_stage_weight: float = Field(ge=0)
    rrf_k: int = Field(ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    llm: LlmRerank

    def keeps(self, kind: str) -> tuple[float | None, float]:
        """The threshold and first-stage weight of reranker ``kind`` (a second stage's name)."""
        group = getattr(self.llm, kind) if kind in LLM_RERANKERS else self
        return group.threshold, group.first_stage_weight

    def check_servable(self, where: str, retrievers: list[str], local_llm: bool) -> None:
        """An error naming the key when a retriever of ``where`` needs what its LLM cannot give: a local LLM where
        the stage does not read one (``local_llm`` False), or query likelihood from an endpoint without prompt
        logprobs."""
        kinds = {second_stage(r) for r in retrievers} & set(LLM_RERANKERS)
        if not kinds:
            return
        if self.llm.model != "endpoint" and not local_llm:
            raise ValueError(f"{where} {sorted(kinds)}: rerank.llm.model {self.llm.model} is the local LLM, which "
                             "serve_infer_retrieval does not read (it would wait for and re-run after the LLM's "
                             "stages): rank with it in rag.retrievers (serve_infer_rag), or serve it and set "
                             "rerank.llm.model endpoint")
        if "query_likelihood" in kinds and self.llm.endpoint is not None and not self.llm.endpoint.prompt_logprobs:
            raise ValueError(f"{where} uses +query_likelihood, which reads the log-probabilities of the question's "
                             "tokens, and rerank.llm.endpoint.prompt_logprobs is false: an endpoint that returns "
                             "them (vLLM) can serve it; else use +yes_no")
