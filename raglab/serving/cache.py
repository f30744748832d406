"""The response cache: every reply of every system, keyed by what was asked, in one SQLite file.

The key is the system identity (what answers: an API's URL and model, or served weights, never a
port), the messages, the sampling parameters, the sample index and the seed; a reply is committed
the moment it arrives. The cache lives outside DVC's outputs (``$RAGLAB_CACHE/responses.sqlite``),
so a killed stage, re-run, asks only for what is missing, and a re-scored run pays nothing.
Errors are never cached. Libraries that make their own calls (ragas' judge) get an
``openai.AsyncOpenAI`` whose HTTP transport goes through the same cache (``cached_async_client``).

What was asked is stored beside each reply, so one system's replies can be exported to a
compressed JSON Lines file and imported on another machine (``export_replies`` /
``import_replies``): a long teacher run goes on in chunks, from whichever machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from raglab.core.formats import atomic_path
from raglab.core.machine import cache_dir
from raglab.serving.types import Endpoint, Reply, Request, Sampling

CACHE_FILE = "responses.sqlite"


def response_cache() -> ResponseCache:
    """The response cache of this machine (``$RAGLAB_CACHE/responses.sqlite``)."""
    return ResponseCache(cache_dir() / CACHE_FILE)


class ResponseCache:
    """Replies by request key in an SQLite file; safe across threads and processes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS http (key TEXT PRIMARY KEY, body BLOB NOT NULL)")
        # What was asked, beside each reply, so a system's replies can be exported and imported elsewhere.
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(replies)")}
        if "identity" not in columns:
            self._db.execute("ALTER TABLE replies ADD COLUMN identity TEXT")
            self._db.execute("ALTER TABLE replies ADD COLUMN request TEXT")
        self._db.commit()

    @staticmethod
    def request_fields(identity: str, request: Request, sampling: Sampling) -> dict[str, Any]:
        """What a reply's key is made of (and what an export stores beside the reply)."""
        return {"identity": identity, "messages": request.messages, "sampling": asdict(sampling),
                "sample": request.sample, "seed": request.seed}

    @staticmethod
    def key_of(fields: dict[str, Any]) -> str:
        payload = json.dumps([fields["identity"], fields["messages"], fields["sampling"], fields["sample"],
                              fields["seed"]], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    @classmethod
    def key(cls, identity: str, request: Request, sampling: Sampling) -> str:
        return cls.key_of(cls.request_fields(identity, request, sampling))

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return Reply(**{**json.loads(row[0]), "cached": True}) if row else None

    @classmethod
    def _row(cls, reply: Reply, fields: dict[str, Any]) -> tuple[str, str, str, str]:
        """The ``replies`` row of a reply to what ``fields`` (``request_fields``) asked, keyed by it."""
        return (cls.key_of(fields), json.dumps({**asdict(reply), "cached": False}, ensure_ascii=False),
                fields["identity"], json.dumps(fields, sort_keys=True, ensure_ascii=False))

    def put(self, reply: Reply, fields: dict[str, Any]) -> None:
        """Store a successful reply to what ``fields`` (``request_fields``) asked, under its key."""
        if not reply.ok:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies (key, reply, identity, request) VALUES (?, ?, ?, ?)",
                             self._row(reply, fields))
            self._db.commit()

    def entries(self, identity: str) -> list[dict[str, Any]]:
        """Every stored reply of ``identity`` with what was asked, in key order (``request_fields`` + ``reply``)."""
        with self._lock:
            rows = self._db.execute("SELECT key, reply, request FROM replies WHERE identity = ? ORDER BY key",
                                    (identity,)).fetchall()
        return [{"key": key, **json.loads(request), "reply": {k: v for k, v in json.loads(reply).items()
                                                              if k != "cached"}}
                for key, reply, request in rows]

    def add_entries(self, entries: list[dict[str, Any]], source: str = "entries",
                    identity: str | None = None) -> dict[str, int]:
        """Store exported entries (``entries``' form), those of ``identity`` only when it is given, in one
        transaction: counts ``added``, ``present`` (already in the cache) and ``other`` (another system's). Each
        key is recomputed from what was asked, so a file from another machine lands under this cache's key."""
        counts = {"added": 0, "present": 0, "other": 0}
        rows = []
        for n, entry in enumerate(entries, start=1):
            try:
                fields = {k: entry[k] for k in ("identity", "messages", "sampling", "sample", "seed")}
                reply = Reply(**entry["reply"])
            except (KeyError, TypeError) as e:
                raise ValueError(f"{source}: entry {n}: not an exported reply ({type(e).__name__}: {e})") from None
            if identity is not None and fields["identity"] != identity:
                counts["other"] += 1
                continue
            if not reply.ok:
                raise ValueError(f"{source}: entry {n}: a failed request ({reply.error}) is not a reply")
            rows.append(self._row(reply, fields))
        with self._lock:
            before = self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
            self._db.executemany("INSERT OR IGNORE INTO replies (key, reply, identity, request) VALUES (?, ?, ?, ?)",
                                 rows)
            self._db.commit()
            counts["added"] = self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0] - before
        counts["present"] = len(rows) - counts["added"]
        return counts

    def get_body(self, key: str) -> bytes | None:
        """A cached HTTP response body (``CachingTransport``)."""
        with self._lock:
            row = self._db.execute("SELECT body FROM http WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put_body(self, key: str, body: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO http (key, body) VALUES (?, ?)", (key, body))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return (self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
                    + self._db.execute("SELECT COUNT(*) FROM http").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def export_replies(cache: ResponseCache, identity: str, path: str | os.PathLike) -> int:
    """Write ``identity``'s replies (with what was asked) to a gzip-compressed JSON Lines file, atomically.
    The file is byte-stable for the same entries (key order, no timestamp in the gzip header)."""
    import gzip

    entries = cache.entries(identity)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        for entry in entries:
            f.write((json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return len(entries)


def import_replies(cache: ResponseCache, path: str | os.PathLike, identity: str | None = None) -> dict[str, int]:
    """Read a file of ``export_replies`` into the cache (``identity``'s entries only, when given): the counts
    of ``ResponseCache.add_entries``."""
    import gzip

    entries = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        entries.append(json.loads(line))
                    except ValueError as e:
                        raise ValueError(f"{path}: line {n}: not JSON ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a gzip-compressed JSON Lines file of replies ({e})") from None
    return cache.add_entries(entries, str(path), identity)


class CachingTransport:
    """An ``httpx`` async transport that answers a POST from the ``ResponseCache`` when it can.

    The key is the cache identity (what answers: an API's URL and model, or served weights), the
    URL path and the JSON body; the n-th identical request of a run gets its own entry (ragas asks
    the same question-generation prompt ``strictness`` times), so a re-run replays every reply in
    order. Only successful responses are stored, so the client's retries still see errors.
    ``base_url`` is called on the first cache miss: a served judge starts only then."""

    def __init__(self, cache: ResponseCache, identity: str, base_url):
        import httpx

        self.cache, self.identity, self.base_url = cache, identity, base_url
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: dict[str, int] = {}
        self.hits = self.misses = 0

    def key(self, request) -> str:
        try:
            body = json.dumps(json.loads(request.content), sort_keys=True, ensure_ascii=False)
        except ValueError:
            body = request.content.decode("utf-8", "replace")
        base = hashlib.sha256(json.dumps([self.identity, request.url.path, body]).encode()).hexdigest()
        n = self.seen.get(base, 0)
        self.seen[base] = n + 1
        return f"http:{base}:{n}"

    async def handle_async_request(self, request):
        import httpx

        await request.aread()
        key = self.key(request)
        body = self.cache.get_body(key)
        if body is not None:
            self.hits += 1
            return httpx.Response(200, headers={"content-type": "application/json"}, content=body, request=request)
        self.misses += 1
        real = httpx.URL(self.base_url().rstrip("/") + request.url.path.split("/v1", 1)[-1])
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        outgoing = httpx.Request(request.method, real, headers=headers, content=request.content)
        response = await self.inner.handle_async_request(outgoing)
        body = await response.aread()
        await response.aclose()
        if response.status_code == 200:
            self.cache.put_body(key, body)
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in {"content-encoding", "transfer-encoding", "content-length", "connection"}}
        return httpx.Response(response.status_code, headers=headers, content=body, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def cached_async_client(endpoint: Endpoint, cache: ResponseCache, identity: str, *, timeout_s: float,
                        max_retries: int):
    """``(openai.AsyncOpenAI, CachingTransport)`` for a library that makes its own requests to ``endpoint``.
    The client sees a placeholder URL: the endpoint's own (``endpoint.base_url``) is read on the first
    cache miss, so a served endpoint starts only when a request needs it."""
    import httpx
    from openai import AsyncOpenAI

    transport = CachingTransport(cache, identity, lambda: endpoint.base_url)
    http_client = httpx.AsyncClient(transport=transport, timeout=timeout_s)
    client = AsyncOpenAI(base_url="http://endpoint.invalid/v1", api_key=endpoint.api_key(), timeout=timeout_s,
                         max_retries=max_retries, http_client=http_client)
    return client, transport
