"""OpenAI-compatible chat clients: our vLLM server, a hosted API, or a teacher model.

Requests go out concurrently (at most ``concurrency`` in flight) through the official ``openai``
async client, which retries with exponential backoff on 408 / 409 / 429 / 5xx, timeouts and
dropped connections, and honours ``Retry-After`` (``max_retries``). A request that still fails
comes back as a ``Reply`` with its ``error`` set, so a caller can count it and ask again
instead of losing the batch. API keys come from environment variables only.

Every reply can go through a ``ResponseCache`` (SQLite, outside DVC's outputs): the key is the
system identity, the messages, the sampling parameters and the sample index; a reply is committed
the moment it arrives, so a killed run, re-run, asks only for what is missing, and a re-scored
run pays nothing. Errors are never cached.

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

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self._db.close()


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
