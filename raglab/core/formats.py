"""On-disk data formats: JSON Lines and JSON files, written atomically.

Every writer goes through a temporary file in the target directory and an
``os.replace``, so an interrupted stage never leaves a half-written output
behind and can simply be re-run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input, located by file, row (1-based) and field."""

    def __init__(self, path: str | os.PathLike, message: str, row: int | None = None, field: str | None = None):
        where = str(path)
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path, self.row, self.field = str(path), row, field


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield ``path.partial`` (a leftover of an interrupted run removed first) to be filled; on success it
    replaces ``path``, a file or a folder. On failure it stays for a look, and the next run clears it."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    remove(partial)
    path.parent.mkdir(parents=True, exist_ok=True)
    yield partial
    remove(path)
    os.replace(partial, path)


def remove(path: str | os.PathLike) -> None:
    """Remove a file or a folder, if there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def not_utf8(path: str | os.PathLike, e: UnicodeDecodeError, row: int | None = None) -> DataError:
    return DataError(path, f"not valid UTF-8 at byte {e.start} (a cut-off or binary file?)", row=row)


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None
    if not text.strip():
        raise DataError(path, "empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}; "
                              "a cut-off file?)") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write ``rows`` as JSON Lines; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise not_utf8(path, e, row=i) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"not valid JSON ({e.msg.removesuffix(' at')} at column {e.colno})", row=i) from None
            if not isinstance(row, dict):
                raise DataError(path, f"expected a JSON object, got {type(row).__name__}", row=i)
            rows.append(row)
    return rows


def read_lines(path: str | os.PathLike) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> int:
    lines = list(lines)
    for i, line in enumerate(lines, start=1):
        if "\n" in line:
            raise DataError(path, "a line-per-record file cannot hold a newline inside a record", row=i)
    write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def require_text(row: dict, field: str, path: str | os.PathLike, row_no: int) -> str:
    """Return ``row[field]`` as a string, or raise a located DataError."""
    if field not in row:
        raise DataError(path, "missing", row=row_no, field=field)
    value = row[field]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(path, f"expected text, got {type(value).__name__}", row=row_no, field=field)
    return value


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_fingerprint(path: str | os.PathLike, skip: tuple[str, ...] = ()) -> str:
    """sha256 over the relative names and contents of every file under ``path`` (except ``skip`` names)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def write_csv(path: str | os.PathLike, rows: list[dict]) -> int:
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
