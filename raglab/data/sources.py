"""Fetch the three public datasets, from the Hugging Face hub or a local mirror.

Both sources produce the same normalised JSON Lines files, one per split:

- ``financial_qa``: ``question, answer, context, ticker, filing``
- ``cmrc2018``: ``id, context, question, answers`` (list of answer texts)
- ``gsm8k``: ``question, answer``

A mirror is a directory laid out like the upstream distributions (see
``MIRROR_FILES``); a split that the params ask for and the mirror lacks is an
error naming the split and the file that was looked for.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raglab.core.formats import DataError, read_json, read_jsonl, sha256_file
from raglab.params.pipeline import DatasetSource

# Upstream file names inside a mirror directory, per dataset and split.
MIRROR_FILES: dict[str, dict[str, str]] = {
    "financial_qa": {"train": "financial-qa-10k/Financial-QA-10k.csv"},
    "cmrc2018": {
        "train": "cmrc2018/cmrc2018_train.json",
        "validation": "cmrc2018/cmrc2018_dev.json",
        "test": "cmrc2018/cmrc2018_test.json",
        # half of the trial set (the hub's `test` split: the brief's test set), passages chosen by a seeded
        # shuffle; a mirror-only split, the hub has no such name
        "trial_a": "cmrc2018/cmrc2018_trial_a.json",
    },
    "gsm8k": {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
}

# splits a mirror holds that the hub does not name, and what to ask the hub for instead
MIRROR_ONLY = {"cmrc2018": {"trial_a": "on the hub, the whole trial set is split 'test'"}}

FINANCIAL_QA_COLUMNS = ("question", "answer", "context", "ticker", "filing")


@dataclass
class SplitData:
    rows: list[dict[str, Any]]
    source: str  # file path or hub reference
    sha256: str | None


# --- financial-qa-10K -------------------------------------------------------------------

def _financial_rows(records: Iterator[dict], where: str) -> Iterator[dict]:
    for i, rec in enumerate(records, start=1):
        out = {}
        for col in FINANCIAL_QA_COLUMNS:
            if col not in rec:
                raise DataError(where, "missing column", row=i, field=col)
            value = rec[col]
            out[col] = "" if value is None else str(value)
        yield out


def _financial_mirror(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, strict=True)
        try:
            fieldnames = reader.fieldnames
            if not fieldnames:
                raise DataError(path, "empty file: no header line", row=0)
            missing = [c for c in FINANCIAL_QA_COLUMNS if c not in fieldnames]
            if missing:
                raise DataError(path, f"header lacks column(s) {missing}; found {fieldnames}", row=0)
            def checked():
                for i, rec in enumerate(reader, start=1):
                    if None in rec or any(v is None for v in rec.values()):  # DictReader's marks of a ragged row
                        raise DataError(path, f"{len(fieldnames)} fields in the header, another number in this row "
                                              f"(line {reader.line_num})", row=i)
                    yield rec

            yield from _financial_rows(checked(), str(path))
        except csv.Error as e:
            raise DataError(path, f"not valid CSV at line {reader.line_num} ({e}; an unclosed quote?)") from None
        except UnicodeDecodeError as e:
            raise DataError(path, f"not valid UTF-8 at byte {e.start}", row=reader.line_num) from None


# --- CMRC 2018 --------------------------------------------------------------------------

def _cmrc_mirror(path: Path) -> Iterator[dict]:
    """SQuAD-style JSON: data[].paragraphs[].{context, qas[].{id, question, answers[].text}}."""
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(path, "expected a SQuAD-style object with a 'data' list", field="data")
    n = 0
    seen: set[str] = set()
    for article in doc["data"]:
        for para in article.get("paragraphs", []):
            context = para.get("context")
            for qa in para.get("qas", []):
                n += 1
                answers = qa.get("answers")
                if not isinstance(answers, list):
                    raise DataError(path, "expected a list", row=n, field="answers")
                qid = str(qa.get("id", n))
                if qid in seen:
                    raise DataError(path, f"question id {qid!r} occurs twice", row=n, field="id")
                seen.add(qid)
                yield {
                    "id": qid,
                    "context": context or "",
                    "question": qa.get("question") or "",
                    "answers": [a.get("text") or "" for a in answers if isinstance(a, dict)],
                }


def _cmrc_hub(records: Iterator[dict], where: str) -> Iterator[dict]:
    for i, rec in enumerate(records, start=1):
        answers = rec.get("answers") or {}
        texts = answers.get("text") if isinstance(answers, dict) else None
        if texts is None:
            raise DataError(where, "expected {'text': [...], 'answer_start': [...]}", row=i, field="answers")
        yield {
            "id": str(rec.get("id", i)),
            "context": rec.get("context") or "",
            "question": rec.get("question") or "",
            "answers": list(texts),
        }


# --- GSM8K ------------------------------------------------------------------------------

def _gsm8k_rows(records: Iterator[dict], where: str) -> Iterator[dict]:
    for i, rec in enumerate(records, start=1):
        for col in ("question", "answer"):
            if col not in rec:
                raise DataError(where, "missing", row=i, field=col)
        yield {"question": rec["question"] or "", "answer": rec["answer"] or ""}


def _gsm8k_mirror(path: Path) -> Iterator[dict]:
    yield from _gsm8k_rows(iter(read_jsonl(path)), str(path))


MIRROR_READERS: dict[str, Callable[[Path], Iterator[dict]]] = {
    "financial_qa": _financial_mirror,
    "cmrc2018": _cmrc_mirror,
    "gsm8k": _gsm8k_mirror,
}
HUB_NORMALISERS: dict[str, Callable[[Iterator[dict], str], Iterator[dict]]] = {
    "financial_qa": _financial_rows,
    "cmrc2018": _cmrc_hub,
    "gsm8k": _gsm8k_rows,
}


def mirror_file(mirror: str | os.PathLike, dataset: str, split: str) -> Path:
    try:
        rel = MIRROR_FILES[dataset][split]
    except KeyError:
        known = sorted(MIRROR_FILES.get(dataset, {}))
        raise ValueError(f"dataset '{dataset}' has no split '{split}' (known splits: {known})") from None
    path = Path(mirror) / rel
    if not path.is_file():
        raise FileNotFoundError(
            f"mirror {mirror} lacks split '{split}' of dataset '{dataset}': expected file {path}"
        )
    return path


def _take(rows: Iterator[dict], limit: int | None) -> list[dict]:
    out = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        out.append(row)
    return out


def load_split(dataset: str, spec: DatasetSource | None, split: str, mirror: str | None,
               limit: int | None) -> SplitData:
    """Load one split of ``dataset`` from ``mirror`` (a directory) or from the hub (``spec``: id, revision)."""
    if dataset not in MIRROR_READERS:
        raise ValueError(f"unknown dataset '{dataset}' (known: {sorted(MIRROR_READERS)})")
    if mirror:
        path = mirror_file(mirror, dataset, split)
        return SplitData(_take(MIRROR_READERS[dataset](path), limit), str(path), sha256_file(path))

    import datasets  # heavy; only the hub path needs it

    if spec is None:
        raise ValueError(f"{dataset}: no mirror and no hub id to load split '{split}' from")
    if split in MIRROR_ONLY.get(dataset, ()):
        raise ValueError(f"{dataset}: split '{split}' exists only in a mirror ({MIRROR_FILES[dataset][split]}); "
                         f"{MIRROR_ONLY[dataset][split]}")
    ds = datasets.load_dataset(spec.hub_id, spec.config, split=split, revision=spec.revision)
    where = f"{spec.hub_id}@{spec.revision}:{split}"
    files = sorted(f["filename"] for f in ds.cache_files)
    digest = ",".join(sha256_file(f) for f in files) if files else None
    return SplitData(_take(HUB_NORMALISERS[dataset](iter(ds), where), limit), where, digest)


def read_downloaded(source_dir: str | os.PathLike, dataset: str, split: str, stage: str, report) -> list[dict]:
    """The rows of ``split`` that ``download`` wrote for ``dataset`` into ``source_dir``, counted as read
    in the stage's ``report``; a split that was not downloaded is an error saying which param adds it."""
    path = Path(source_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{stage} needs split '{split}' of {dataset}: {path} does not exist "
                                f"(add it to download.datasets.{dataset}.splits)")
    rows = read_jsonl(path)
    report.add_read(str(path), len(rows))
    return rows
