"""A user's own labelled (query, passage) rows, and LlamaIndex's ``EmbeddingQAFinetuneDataset`` JSON both ways.

Rows come from a CSV (or TSV), JSON Lines, Parquet or JSON-array file; ``columns`` maps this lab's fields (query,
passage, passage_id, answer, query_id) to the file's column names. A file that names passages by id only takes a
``corpus`` file (id -> text). LlamaIndex's dataset (``{"queries": {id: text}, "corpus": {id: text},
"relevant_docs": {query id: [doc ids]}, "mode": "text"}``, what its ``save_json`` writes and ``from_json`` reads)
is read as is, one pair per (query, relevant doc), and written in the same layout, so data moves both ways
between this lab and LlamaIndex.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raglab.core.formats import DataError, atomic_path, not_utf8, read_json, read_jsonl
from raglab.core.report import StageReport

log = logging.getLogger("raglab")

FIELDS = ("query", "passage", "passage_id", "answer", "query_id")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json-lines", ".ndjson", ".parquet", ".pq", ".json")
LLAMAINDEX_KEYS = ("queries", "corpus", "relevant_docs")


@dataclass(frozen=True)
class Pair:
    query: str
    passage: str
    passage_id: str  # the user's id, or text_id(passage) when the file has none
    answer: str | None = None
    query_id: str | None = None  # the user's (or LlamaIndex's) query id, kept for writing back


def text_id(text: str) -> str:
    """A stable id for a text the file gives no id: the first 16 hex digits of its UTF-8 sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --- tables -----------------------------------------------------------------------------------------------------

def read_table(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a CSV / TSV / JSON Lines / Parquet / JSON-array file, and the columns the file has."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import pandas as pd

        try:  # every cell as text: ids like "007" stay as written, "NA" is not a missing value
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                                encoding="utf-8-sig")
        except pd.errors.EmptyDataError:
            raise DataError(path, "empty file: no header line", row=0) from None
        except pd.errors.ParserError as e:
            raise DataError(path, f"not a well-formed {suffix[1:].upper()} ({str(e).strip()})") from None
        except UnicodeDecodeError as e:
            raise not_utf8(path, e) from None
        return frame.to_dict("records"), [str(c) for c in frame.columns]
    if suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(path, f"not a readable Parquet file ({e})") from None
        return table.to_pylist(), list(table.column_names)
    if suffix in (".jsonl", ".json-lines", ".ndjson"):
        rows = read_jsonl(path)
    elif suffix == ".json":
        rows = read_json(path)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(path, "expected a JSON array of objects (rows) or LlamaIndex's dataset "
                                  f"(an object with keys {', '.join(LLAMAINDEX_KEYS)})")
    else:
        raise DataError(path, f"no reader for '{suffix}' files (readers: {', '.join(TABLE_SUFFIXES)})")
    return rows, list(dict.fromkeys(key for row in rows for key in row))


def _cell(value: Any, path: Path, row: int, column: str) -> str:
    """A cell as stripped text: missing (None, NaN) is empty, numbers (ids) are written out."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (str, int, float)):
        return str(value).strip()
    raise DataError(path, f"expected text, got {type(value).__name__}", row=row, field=column)


def _columns(path: Path, columns: Mapping[str, str | None] | None, available: list[str]) -> dict[str, str]:
    """This lab's field -> the file's column: the fields named as in this lab where the file has them, overridden
    by ``columns`` (a column named there must exist; None leaves a field out)."""
    unknown = sorted(set(columns or {}) - set(FIELDS))
    if unknown:
        raise ValueError(f"pairs columns: unknown field(s) {unknown}; the fields are {list(FIELDS)}")
    mapping = {field: field for field in FIELDS if field in available}
    mapping.update(columns or {})
    mapping = {field: column for field, column in mapping.items() if column}
    for field in ("query", *[f for f in mapping if f != "query"]):
        if mapping.get(field, field) not in available:
            raise DataError(path, f"no column '{mapping.get(field, field)}' (this lab's {field}); the file has "
                                  f"columns {available}", row=0)
    if "passage" not in mapping and "passage_id" not in mapping:
        raise DataError(path, f"no passage column: map 'passage' (the text) or 'passage_id' (with a corpus) to one "
                              f"of the file's columns {available}", row=0)
    return mapping


def read_corpus(path: str | os.PathLike, columns: Mapping[str, str] | None = None) -> dict[str, str]:
    """Passages by id: a JSON object ``{id: text}`` (or a LlamaIndex dataset's ``corpus``), or a table whose
    ``passage_id`` and ``passage`` columns (renamed by ``columns``) give id and text. An id given twice with two
    different texts is an error naming both rows."""
    path = Path(path)
    if path.suffix.lower() == ".json" and isinstance(data := read_json(path), dict):
        if "corpus" in data:
            return llamaindex_dicts(data, path)[1]
        return _str_dict(data, path, "corpus")
    rows, available = read_table(path)
    names = {"passage_id": "passage_id", "passage": "passage", **(columns or {})}
    for field in ("passage_id", "passage"):
        if names[field] not in available:
            raise DataError(path, f"no column '{names[field]}' (the corpus' {field}); the file has columns "
                                  f"{available}", row=0)
    corpus: dict[str, str] = {}
    first_row: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):
        pid = _cell(row.get(names["passage_id"]), path, i, names["passage_id"])
        text = _cell(row.get(names["passage"]), path, i, names["passage"])
        if pid in corpus and corpus[pid] != text:
            raise DataError(path, f"passage id {pid!r} has another text in row {first_row[pid]}", row=i,
                            field=names["passage"])
        corpus.setdefault(pid, text)
        first_row.setdefault(pid, i)
    return corpus


# --- pairs ------------------------------------------------------------------------------------------------------

def read_pairs(path: str | os.PathLike, columns: Mapping[str, str | None] | None, report: StageReport, *,
               corpus: str | os.PathLike | None = None,
               corpus_columns: Mapping[str, str] | None = None) -> list[Pair]:
    """A user's labelled rows as Pairs, from .csv/.tsv, .jsonl, .parquet, a .json array of rows, or a LlamaIndex
    ``EmbeddingQAFinetuneDataset`` .json (``columns`` does not apply to that one).

    A file with passage ids and no passage text takes ``corpus`` (see :func:`read_corpus`; its columns default to
    ``passage_id`` as this file names it and ``passage``). Rows with an empty query, passage or passage id, or an
    id the corpus lacks, are dropped and counted (``pairs_empty_query``, ``pairs_empty_passage``,
    ``pairs_empty_passage_id``, ``pairs_unknown_passage_id``). A missing column is an error naming the file, the
    column and the columns the file has.
    """
    path = Path(path)
    if path.suffix.lower() == ".json" and isinstance(data := read_json(path), dict):
        return llamaindex_pairs(*llamaindex_dicts(data, path), report)
    rows, available = read_table(path)
    mapping = _columns(path, columns, available)
    texts: dict[str, str] | None = None
    if "passage" not in mapping:
        if corpus is None:
            raise DataError(path, f"passages are given by id (column '{mapping['passage_id']}') and no corpus file "
                                  "gives their text: name one (id -> text)")
        texts = read_corpus(corpus, {"passage_id": mapping["passage_id"], **(corpus_columns or {})})
        report.add_read("corpus_passages", len(texts))
    elif corpus is not None:
        raise DataError(path, f"has passage text (column '{mapping['passage']}') and a corpus was named too: "
                              "give one or the other")
    report.add_read("pair_rows", len(rows))
    pairs, unknown, seen = [], [], {}
    for i, row in enumerate(rows, start=1):
        cells = {field: _cell(row.get(column), path, i, column) for field, column in mapping.items()}
        if not cells["query"]:
            report.drop("pairs_empty_query")
            continue
        if texts is not None:
            if not cells["passage_id"]:
                report.drop("pairs_empty_passage_id")
                continue
            if cells["passage_id"] not in texts:
                unknown.append(cells["passage_id"])
                continue
            cells["passage"] = texts[cells["passage_id"]]
        if not cells["passage"]:
            report.drop("pairs_empty_passage")
            continue
        pid = cells.get("passage_id") or text_id(cells["passage"])
        if seen.setdefault(pid, (cells["passage"], i))[0] != cells["passage"]:
            raise DataError(path, f"passage id {pid!r} has another text in row {seen[pid][1]}", row=i,
                            field=mapping["passage"])
        pairs.append(Pair(cells["query"], cells["passage"], pid, cells.get("answer") or None,
                          cells.get("query_id") or None))
    if unknown:
        report.drop("pairs_unknown_passage_id", len(unknown))
        log.warning("[%s] dropped %d pair(s) of %s whose passage id is not in %s: %s", report.stage, len(unknown),
                    path, corpus, ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else ""))
    return pairs


# --- LlamaIndex's EmbeddingQAFinetuneDataset ----------------------------------------------------------------

def _str_dict(value: Any, path: Path, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DataError(path, f"expected an object (id -> text), got {type(value).__name__}", field=field)
    for key, text in value.items():
        if not isinstance(text, str):
            raise DataError(path, f"expected text, got {type(text).__name__}", field=f"{field}.{key}")
    return value


def read_llamaindex(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """``(queries, corpus, relevant_docs)`` of a LlamaIndex ``EmbeddingQAFinetuneDataset`` JSON file, as is."""
    return llamaindex_dicts(read_json(path), Path(path))


def llamaindex_dicts(data: Any, path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """The three dicts of a parsed LlamaIndex dataset, each checked for its types (``path`` names it in errors)."""
    if not isinstance(data, dict) or any(key not in data for key in LLAMAINDEX_KEYS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(path, f"not LlamaIndex's EmbeddingQAFinetuneDataset: expected keys {list(LLAMAINDEX_KEYS)}, "
                              f"found {found}")
    if data.get("mode", "text") != "text":
        raise DataError(path, f"mode {data['mode']!r}: only text datasets are read", field="mode")
    queries, corpus = _str_dict(data["queries"], path, "queries"), _str_dict(data["corpus"], path, "corpus")
    relevant = data["relevant_docs"]
    if not isinstance(relevant, dict):
        raise DataError(path, f"expected an object (query id -> doc ids), got {type(relevant).__name__}",
                        field="relevant_docs")
    for qid, docs in relevant.items():
        if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
            raise DataError(path, "expected a list of doc ids", field=f"relevant_docs.{qid}")
    return queries, corpus, relevant


def write_llamaindex(path: str | os.PathLike, queries: Mapping[str, str], corpus: Mapping[str, str],
                     relevant_docs: Mapping[str, Iterable[str]]) -> None:
    """Write the three dicts atomically, byte for byte as LlamaIndex's ``save_json`` would (``json.dump`` of the
    model with ``indent=4``), so ``EmbeddingQAFinetuneDataset.from_json`` reads it. Every query of
    ``relevant_docs`` must be in ``queries`` and every doc in ``corpus``."""
    relevant = {qid: list(docs) for qid, docs in relevant_docs.items()}
    for qid, docs in relevant.items():
        if qid not in queries:
            raise ValueError(f"{path}: relevant_docs names query {qid!r}, which is not among the queries")
        if missing := [d for d in docs if d not in corpus]:
            raise ValueError(f"{path}: query {qid!r} has relevant doc(s) {missing[:5]} not in the corpus")
    data = {"queries": dict(queries), "corpus": dict(corpus), "relevant_docs": relevant, "mode": "text"}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=4), encoding="utf-8")


def llamaindex_pairs(queries: Mapping[str, str], corpus: Mapping[str, str],
                     relevant_docs: Mapping[str, list[str]], report: StageReport) -> list[Pair]:
    """One Pair per (query, relevant doc), in the dataset's order; queries without relevant docs, docs not in
    the corpus and empty texts are dropped and counted."""
    report.add_read("llamaindex_queries", len(queries))
    pairs, unknown = [], []
    for qid, query in queries.items():
        docs = relevant_docs.get(qid) or []
        if not docs:
            report.drop("pairs_no_relevant_doc")
        elif not query.strip():
            report.drop("pairs_empty_query", len(docs))
            continue
        for doc in docs:
            if doc not in corpus:
                unknown.append(doc)
            elif not corpus[doc].strip():
                report.drop("pairs_empty_passage")
            else:
                pairs.append(Pair(query, corpus[doc], doc, query_id=qid))
    if unknown:
        report.drop("pairs_unknown_passage_id", len(unknown))
        log.warning("[%s] dropped %d pair(s) whose doc id is not in the corpus: %s", report.stage, len(unknown),
                    ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else ""))
    return pairs


def to_llamaindex(pairs: Iterable[Pair]) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """``(queries, corpus, relevant_docs)`` of pairs, for :func:`write_llamaindex`: a query's id is its
    ``query_id`` or ``text_id`` of its text, pairs of one query id gather its relevant docs in order."""
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    for pair in pairs:
        qid = pair.query_id or text_id(pair.query)
        if queries.setdefault(qid, pair.query) != pair.query:
            raise ValueError(f"query id {qid!r} has two texts: {queries[qid]!r} and {pair.query!r}")
        if corpus.setdefault(pair.passage_id, pair.passage) != pair.passage:
            raise ValueError(f"passage id {pair.passage_id!r} has two texts")
        if pair.passage_id not in relevant.setdefault(qid, []):
            relevant[qid].append(pair.passage_id)
    return queries, corpus, relevant
