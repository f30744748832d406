"""OpenAI-compatible chat clients: our vLLM server, a hosted API, or a teacher model.

Requests go out concurrently (bounded) through the official ``openai`` async
client; API keys come from environment variables only.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from tqdm import tqdm


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


async def _chat_all(endpoint: Endpoint, conversations: list[list[dict]], max_tokens: int, temperature: float,
                    concurrency: int, timeout_s: float, desc: str) -> list[str]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key(), timeout=timeout_s, max_retries=3)
    semaphore = asyncio.Semaphore(concurrency)
    progress = tqdm(total=len(conversations), desc=desc)

    async def one(messages: list[dict]) -> str:
        async with semaphore:
            response = await client.chat.completions.create(
                model=endpoint.model, messages=messages, max_tokens=max_tokens, temperature=temperature,
            )
        progress.update()
        return response.choices[0].message.content or ""

    try:
        return list(await asyncio.gather(*(one(m) for m in conversations)))
    finally:
        progress.close()
        await client.close()


def chat_all(endpoint: Endpoint, conversations: list[list[dict]], *, max_tokens: int, temperature: float = 0.0,
             concurrency: int = 8, timeout_s: float = 600, desc: str = "chat") -> list[str]:
    """The assistant's reply to each conversation, in order."""
    return asyncio.run(_chat_all(endpoint, conversations, max_tokens, temperature, concurrency, timeout_s, desc))
