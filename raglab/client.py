"""OpenAI-compatible chat clients: our vLLM server, a hosted API, or a teacher model.

Requests go out concurrently (at most ``concurrency`` in flight) through the official ``openai``
async client, which retries with exponential backoff on 408 / 409 / 429 / 5xx, timeouts and
dropped connections, and honours ``Retry-After`` (``max_retries``). A request that still fails
comes back as a ``Reply`` with its ``error`` set, so a caller can count it and ask again
instead of losing the batch. API keys come from environment variables only.

Every reply can go through a ``ResponseCache`` (SQLite, outside DVC's outputs): the key is the
system identity, the messages, the sampling parameters and the sample index; a reply is committed
the moment it arrives, so a killed run, re-run, asks only for what is missing, and a re-scored
run pays nothing. Errors are never cached. Libraries that make their own calls (ragas' judge)
get an ``openai.AsyncOpenAI`` whose HTTP transport goes through the same cache
(``cached_async_client``).

Reasoning models return their reasoning either in a separate ``reasoning_content`` field
(DeepSeek-R1's API, vLLM's reasoning parsers) or inline in ``<think>…</think>``; ``Reply`` keeps
both apart (``reasoning``, ``content``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger("raglab")

THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


@dataclass
class Endpoint:
    base_url: str
    model: str
    api_key_env: str | None = None  # name of the environment variable that holds the key

    def api_key(self) -> str:
        if not self.api_key_env:
            return "EMPTY"  # local servers ignore the key
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(f"environment variable {self.api_key_env} (API key for {self.base_url}) is not set")
        return key


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)  # server-specific fields (vLLM: continue_final_message)

    def request_fields(self) -> dict[str, Any]:
        fields = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.top_p is not None:
            fields["top_p"] = self.top_p
        if self.extra_body:
            fields["extra_body"] = dict(self.extra_body)
        return fields


@dataclass
class Reply:
    content: str = ""
    reasoning: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def split_reasoning(content: str, reasoning: str | None) -> tuple[str, str | None]:
    """(content, reasoning): a separate reasoning field wins; else a leading ``<think>…</think>`` block."""
    if reasoning:
        return content, reasoning
    m = THINK.match(content)
    if m:
        return content[m.end():], m.group(1).strip("\n")
    return content, None


@dataclass
class Request:
    messages: list[dict]
    sample: int = 0  # which sample of the same conversation (rounds of a teacher); part of the cache key
    seed: int | None = None  # the sampling seed sent with the request (vLLM makes a sampled reply reproducible)


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
        self._db.commit()

    @staticmethod
    def key(identity: str, request: Request, sampling: Sampling) -> str:
        payload = json.dumps([identity, request.messages, asdict(sampling), request.sample, request.seed],
                             sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return Reply(**{**json.loads(row[0]), "cached": True}) if row else None

    def put(self, key: str, reply: Reply) -> None:
        if not reply.ok:
            return
        data = json.dumps({**asdict(reply), "cached": False}, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies (key, reply) VALUES (?, ?)", (key, data))
            self._db.commit()

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


async def _chat_all(endpoint: Endpoint, requests: list[Request], sampling: Sampling, concurrency: int,
                    timeout_s: float, max_retries: int, cache: ResponseCache | None, identity: str,
                    desc: str) -> list[Reply]:
    from openai import APIError, AsyncOpenAI

    keys = [cache.key(identity, r, sampling) for r in requests] if cache is not None else [None] * len(requests)
    replies: list[Reply | None] = [cache.get(k) for k in keys] if cache is not None else [None] * len(requests)
    missing = [i for i, r in enumerate(replies) if r is None]
    if not missing:  # everything from the cache: the endpoint is not even touched (a served teacher never starts)
        return replies
    client = AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key(), timeout=timeout_s,
                         max_retries=max_retries)
    semaphore = asyncio.Semaphore(concurrency)
    progress = tqdm(total=len(requests), initial=len(requests) - len(missing), desc=desc)

    async def one(i: int) -> None:
        request = requests[i]
        async with semaphore:
            try:
                seed = {} if request.seed is None else {"seed": request.seed}
                response = await client.chat.completions.create(
                    model=endpoint.model, messages=request.messages, **sampling.request_fields(), **seed)
                choice = response.choices[0]
                content, reasoning = split_reasoning(choice.message.content or "",
                                                     getattr(choice.message, "reasoning_content", None))
                usage = response.usage
                reply = Reply(content=content, reasoning=reasoning, finish_reason=choice.finish_reason,
                              prompt_tokens=usage.prompt_tokens if usage else 0,
                              completion_tokens=usage.completion_tokens if usage else 0)
            except (APIError, ValueError, IndexError, AttributeError) as e:  # after the client's own retries
                reply = Reply(error=f"{type(e).__name__}: {e}")
        if cache is not None:
            cache.put(keys[i], reply)
        replies[i] = reply
        progress.update()

    try:
        await asyncio.gather(*(one(i) for i in missing))
        return replies
    finally:
        progress.close()
        await client.close()


def chat_many(endpoint: Endpoint, requests: list[Request], sampling: Sampling, *, concurrency: int = 8,
              timeout_s: float = 600, max_retries: int = 5, cache: ResponseCache | None = None,
              identity: str | None = None, desc: str = "chat") -> list[Reply]:
    """One ``Reply`` per request, in order; failed requests carry ``error`` (never raised, never cached)."""
    identity = identity or f"{endpoint.base_url}|{endpoint.model}"
    return asyncio.run(_chat_all(endpoint, requests, sampling, concurrency, timeout_s, max_retries, cache,
                                 identity, desc))


def chat_all(endpoint: Endpoint, conversations: list[list[dict]], *, max_tokens: int, temperature: float = 0.0,
             concurrency: int = 8, timeout_s: float = 600, desc: str = "chat", **kwargs) -> list[str]:
    """The assistant's reply to each conversation, in order; raises if any request failed after retries."""
    replies = chat_many(endpoint, [Request(m) for m in conversations], Sampling(max_tokens, temperature),
                        concurrency=concurrency, timeout_s=timeout_s, desc=desc, **kwargs)
    raise_failures(replies, endpoint)
    return [r.content for r in replies]


def raise_failures(replies: list[Reply], endpoint: Endpoint) -> None:
    failed = [r for r in replies if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(replies)} requests to {endpoint.base_url} ({endpoint.model}) "
                           f"failed after retries; first: {failed[0].error}")
