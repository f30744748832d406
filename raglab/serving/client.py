"""OpenAI-compatible chat clients: our vLLM server, a hosted API, or a teacher model.

Requests go out concurrently (at most ``concurrency`` in flight) through the official ``openai``
async client, which retries with exponential backoff on 408 / 409 / 429 / 5xx, timeouts and
dropped connections, and honours ``Retry-After`` (``max_retries``). A request that still fails
comes back as a ``Reply`` with its ``error`` set, so a caller can count it and ask again
instead of losing the batch. API keys come from environment variables only.

Every reply can go through the ``ResponseCache`` (``raglab.serving.cache``): a killed run, re-run,
asks only for what is missing, and a re-scored run pays nothing. Errors are never cached.

Reasoning models return their reasoning either in a separate ``reasoning_content`` field
(DeepSeek-R1's API, vLLM's reasoning parsers) or inline in ``<think>…</think>``; ``Reply`` keeps
both apart (``reasoning``, ``content``).
"""

from __future__ import annotations

import asyncio
import logging

from tqdm import tqdm

from raglab.serving.cache import ResponseCache
from raglab.serving.types import Endpoint, Reply, Request, Sampling, split_reasoning

__all__ = ["Endpoint", "Reply", "Request", "Sampling", "chat_all", "chat_many", "raise_failures"]

log = logging.getLogger("raglab")


async def _chat_all(endpoint: Endpoint, requests: list[Request], sampling: Sampling, concurrency: int,
                    timeout_s: float, max_retries: int, cache: ResponseCache | None, identity: str,
                    desc: str) -> list[Reply]:
    from openai import APIError, AsyncOpenAI

    asked = [ResponseCache.request_fields(identity, r, sampling) for r in requests]
    replies: list[Reply | None] = ([cache.get(ResponseCache.key_of(f)) for f in asked] if cache is not None
                                   else [None] * len(requests))
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
                reply = Reply(error=f"{type(e).__name__}: {e}", too_long=_context_exceeded(e))
        if cache is not None:
            cache.put(reply, asked[i])
        replies[i] = reply
        progress.update()

    try:
        await asyncio.gather(*(one(i) for i in missing))
        return replies
    finally:
        progress.close()
        await client.close()


def _context_exceeded(error: Exception) -> bool:
    """Whether the server refused the request because the prompt does not fit its context: a 400 whose message
    says so (vLLM: "This model's maximum context length is …"; OpenAI: code ``context_length_exceeded``)."""
    text = str(error)
    return (getattr(error, "status_code", None) == 400
            and ("maximum context length" in text or "context_length_exceeded" in text))


def chat_many(endpoint: Endpoint, requests: list[Request], sampling: Sampling, *, concurrency: int = 8,
              timeout_s: float = 600, max_retries: int = 5, cache: ResponseCache | None = None,
              identity: str | None = None, desc: str = "chat") -> list[Reply]:
    """One ``Reply`` per request, in order; failed requests carry ``error`` (never raised, never cached)."""
    identity = identity or endpoint.identity
    return asyncio.run(_chat_all(endpoint, requests, sampling, concurrency, timeout_s, max_retries, cache,
                                 identity, desc))


def chat_all(endpoint: Endpoint, conversations: list[list[dict]], *, max_tokens: int, temperature: float = 0.0,
             concurrency: int = 8, timeout_s: float = 600, desc: str = "chat", **kwargs) -> list[str]:
    """The assistant's reply to each conversation, in order; raises if any request failed after retries."""
    replies = chat_many(endpoint, [Request(m) for m in conversations], Sampling(max_tokens, temperature),
                        concurrency=concurrency, timeout_s=timeout_s, desc=desc, **kwargs)
    raise_failures(replies, endpoint)
    return [r.content for r in replies]


def raise_failures(replies: list[Reply], endpoint: Endpoint, *, tolerate_too_long: bool = False) -> None:
    failed = [r for r in replies if not r.ok and not (tolerate_too_long and r.too_long)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(replies)} requests to {endpoint.base_url} ({endpoint.model}) "
                           f"failed after retries; first: {failed[0].error}")
