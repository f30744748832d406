"""The RAG system's knowledge base: the eval split's passages, each once, as JSON lines (passages may hold
newlines). build_sft writes it; the scored system and the assistant read it. The assistant can serve the user's
own documents instead: build_chunks' chunks (``assistant.knowledge_base: documents``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from raglab.core.formats import DataError, read_jsonl, require_text, write_jsonl


def unique_passages(rows: Sequence[dict]) -> list[str]:
    """The knowledge base of an eval split: each ``context`` once, in order of first appearance."""
    return list(dict.fromkeys(r["context"] for r in rows))


def write_kb(path: str | os.PathLike, passages: Sequence[str]) -> int:
    """A knowledge base as JSON lines ``{"id", "text"}`` (CMRC passages may hold newlines)."""
    return write_jsonl(path, ({"id": i, "text": t} for i, t in enumerate(passages)))


def read_kb(path: str | os.PathLike) -> list[str]:
    rows = read_jsonl(path)
    if not rows:
        raise DataError(path, "the knowledge base is empty")
    return [require_text(r, "text", path, i) for i, r in enumerate(rows, start=1)]


def read_chunks(path: str | os.PathLike) -> list[str]:
    """The texts of build_chunks' ``chunks.jsonl``: the user's documents as a knowledge base."""
    rows = read_jsonl(path)
    if not rows:
        raise DataError(path, "no chunks: own.documents gave nothing to serve")
    return [require_text(r, "text", path, i) for i, r in enumerate(rows, start=1)]
