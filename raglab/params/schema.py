"""The declared shape of ``params.yaml``: one pydantic model per parameter group.

``params.yaml`` stays the one place where values live; this module says which keys exist, their
types, ranges and choices. Every stage checks the whole file when it starts (``raglab.params.loader``),
and ``python -m raglab.params.loader`` checks it (or a profile laid over it) in a second, so a typo, a
wrong type or an out-of-range value stops a run before any training, with one line that names the
key, what was expected and, for an unknown key, the nearest known one.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError, model_validator

from raglab.params.pipeline import (
    BuildEmbedNegatives,
    BuildSft,
    DistillCot,
    Download,
    Embedder,
    Group,
    Model,
    Prompt,
    Reranker,
    TrainEmbed,
    TrainLlm,
    TrainRerank,
)
from raglab.params.own import Own
from raglab.params.rerank import Rerank, second_stage
from raglab.params.serving import Assistant, Rag, Score, ServeInfer, Serving


class Params(Group):
    download: Download
    prompt: Prompt
    llm: Model
    embedder: Embedder
    reranker: Reranker
    build_embed_negatives: BuildEmbedNegatives
    build_sft: BuildSft
    distill_cot: DistillCot
    own: Own
    train_embed: TrainEmbed
    train_rerank: TrainRerank
    train_llm: TrainLlm
    serving: Serving
    serve_infer: ServeInfer
    rerank: Rerank
    rag: Rag
    score: Score
    assistant: Assistant

    @model_validator(mode="after")
    def _across_groups(self) -> Params:
        top_k, top_n = self.serve_infer.retrieval.top_k, self.score.retrieval.context_top_n
        if top_n > top_k:
            raise ValueError(f"score.retrieval.context_top_n ({top_n}) must not exceed serve_infer.retrieval.top_k ({top_k})")
        rag = self.rag
        if rag.top_k > rag.rank_depth:
            raise ValueError(f"rag.top_k ({rag.top_k}) must not exceed rag.rank_depth ({rag.rank_depth})")
        if too_deep := [k for k in self.score.rag.hit_at if k > rag.rank_depth]:
            raise ValueError(f"score.rag.hit_at {too_deep} must not exceed rag.rank_depth ({rag.rank_depth})")
        candidates = self.rerank.candidates
        for where, names, depth in (("serve_infer.retrieval.systems", self.serve_infer.retrieval.systems,
                                     ("serve_infer.retrieval.top_k", top_k)),
                                    ("rag.retrievers", rag.retrievers, ("rag.rank_depth", rag.rank_depth)),
                                    ("assistant.retriever", [self.assistant.retriever], ("rag.top_k", rag.top_k))):
            if candidates < depth[1] and (reranked := [n for n in names if "+" in n]):
                raise ValueError(f"rerank.candidates ({candidates}) must be at least {depth[0]} ({depth[1]}): "
                                 f"{where} {reranked} rerank that many first-stage passages and keep the best")
            self.rerank.check_servable(where, names, local_llm=where != "serve_infer.retrieval.systems")
            if not self.train_rerank.enabled and (tuned := [n for n in names if second_stage(n) == "rerank"]):
                raise ValueError(f"{where} {tuned} rerank with train_rerank's cross-encoder, and "
                                 "train_rerank.enabled is false: enable it, or drop them (X+base_rerank uses the "
                                 "untuned one)")
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


def validate(params: dict[str, Any], source: str = "params.yaml") -> Params:
    """``params`` checked against the schema, as typed groups; raises ParamsError naming every problem."""
    try:
        return Params.model_validate(params)
    except ValidationError as e:
        raise ParamsError(describe_errors(e, source)) from None
