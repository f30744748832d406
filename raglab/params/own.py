"""Parameter groups of the user's own domain (``own``): their documents, the chunks cut from them and the questions
a teacher writes about each chunk."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from raglab.params.pipeline import Group, PositiveInt


def _question_prompt(v: str) -> str:
    for field in ("{passage}", "{n}"):
        if field not in v:
            raise ValueError(f"the prompt must contain {field}")
    return v


class PassageTable(Group):
    """Documents made of a table's passages (financial-qa: the 10-K passages of one filing make one document)."""
    text: str                 # the passage column
    group_by: list[str] = Field(min_length=1)  # the columns whose values name a document (ticker, filing)
    train_side_only: bool     # only rows on the training side of build_embed_negatives' seeded split of the table,
                              # and no passage that a row on the test side also has


class Documents(Group):
    path: str                 # a folder of files matching globs (PDF, Markdown, HTML, text, Word; `dvc add` it),
                              # or, with `passages`, a JSON Lines table of passages
    globs: list[str] = Field(min_length=1)
    passages: PassageTable | None


class Chunks(Group):
    size: int = PositiveInt()        # tokens of the embedder
    overlap: int = Field(ge=0)       # tokens the next chunk repeats (whole sentences)
    min_tokens: int = Field(ge=1)    # shorter chunks are dropped
    dedup_threshold: float = Field(gt=0, le=1)  # near-duplicate chunks: char n-gram TF-IDF cosine at or above

    @model_validator(mode="after")
    def _overlap(self) -> Chunks:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be below size ({self.size})")
        return self


QuestionsPrompt = Annotated[str, AfterValidator(_question_prompt)]


class Questions(Group):
    per_chunk: int = PositiveInt()
    answers: bool              # also a short answer copied from the chunk (the generator's SFT records)
    prompts: dict[Literal["en", "zh"], QuestionsPrompt]  # by the chunk's language
    prompts_with_answers: dict[Literal["en", "zh"], QuestionsPrompt]
    replies: str               # exported teacher replies, added to the response cache first (as distill_cot's)
    max_chunks: int | None = Field(ge=0)  # ask about a seeded sample of at most this many chunks (null = all)
    seed: int
    max_tokens: int = PositiveInt()
    temperature: float = Field(ge=0)
    drop_self_references: bool  # drop questions that point at "the passage" / "这段文字" instead of naming a subject
    round_trip_top_k: int | None = Field(ge=1)  # keep a question when the base embedder ranks its chunk this high
    dedup_threshold: float = Field(gt=0, le=1)  # near-duplicate questions: char n-gram TF-IDF cosine at or above

    @model_validator(mode="after")
    def _english(self) -> Questions:
        if "en" not in self.prompts or "en" not in self.prompts_with_answers:
            raise ValueError("prompts and prompts_with_answers need an 'en' prompt (the default language)")
        return self


class Pairs(Group):
    """The user's own labelled rows: a table (CSV/TSV, JSON Lines, Parquet, JSON) or LlamaIndex's JSON."""
    path: str
    columns: dict[Literal["query", "passage", "passage_id", "answer", "query_id"], str | None]  # ours -> the file's


class Own(Group):
    """The user's own domain: documents into chunks, the questions a teacher writes about them, labelled pairs."""
    documents: Documents
    chunks: Chunks
    questions: Questions
    pairs: Pairs
