"""What goes to an OpenAI-compatible endpoint and what comes back: the endpoint, the sampling parameters,
a request and its reply (with the reasoning of a reasoning model split off)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


@dataclass
class Endpoint:
    base_url: str
    model: str
    api_key_env: str | None = None  # name of the environment variable that holds the key

    @property
    def identity(self) -> str:
        """What answers, in cache keys: the API's URL and model (never a key)."""
        return f"{self.base_url}|{self.model}"

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
    too_long: bool = False  # the server refused the prompt as longer than its context (HTTP 400): not retried

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
