"""The OpenAI chat-completions protocol as the assistant speaks it: the request checked field by field, errors in
OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), replies and streamed chunks."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any


class APIError(Exception):
    """An error the client caused (4xx) or the generator reported, answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    """What a chat-completions request asks, checked."""

    messages: list[dict]     # {"role": "user" | "assistant", "content": text}, the last one the user's question
    max_tokens: int | None   # None: the route's own (rag.max_tokens, serve_infer.math.max_tokens)
    temperature: float | None
    stream: bool
    include_usage: bool      # stream_options.include_usage: a last chunk with the token counts

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if content is None:
        return ""
    raise APIError(400, f"{where}.content must be a string or a list of content parts", param=f"{where}.content")


def _number(body: dict, name: str, kind: type, low: float, high: float) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise APIError(400, f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}",
                       param=name, code="invalid_type")
    if not low <= value <= high:
        raise APIError(400, f"{name} must be between {low:g} and {high:g}, got {value!r}", param=name,
                       code="invalid_value")
    return kind(value)


def parse_request(raw: bytes, served_model: str, max_completion_tokens: int) -> ChatRequest:
    """The request body, checked: JSON, a known model, messages ending with a user turn with text, and
    ``max_tokens`` / ``temperature`` in range. Client system messages are ignored: the generator's system prompt
    is the one it was trained with (params ``prompt.system``)."""
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise APIError(400, f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model != served_model:
        raise APIError(404, f"The model {model!r} does not exist: this server serves {served_model!r} (GET /v1/models)",
                       param="model", code="model_not_found")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise APIError(400, "messages must be a non-empty list", param="messages")
    messages = []
    for i, m in enumerate(raw_messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise APIError(400, f"messages[{i}] needs a role: system, user or assistant", param=f"messages[{i}].role")
        if m["role"] in ("user", "assistant"):
            messages.append({"role": m["role"], "content": _text(m.get("content"), f"messages[{i}]")})
    if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise APIError(400, "the last message must be a user message with text", param="messages")
    max_tokens = _number(body, "max_completion_tokens", int, 1, max_completion_tokens)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int, 1, max_completion_tokens)
    if body.get("n", 1) != 1:
        raise APIError(400, "n must be 1", param="n", code="invalid_value")
    options = body.get("stream_options") or {}
    return ChatRequest(messages, max_tokens, _number(body, "temperature", float, 0, 2), bool(body.get("stream")),
                       bool(isinstance(options, dict) and options.get("include_usage")))


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Completion:
    """One reply's ids and envelopes: a whole ``chat.completion``, or ``chat.completion.chunk`` server-sent events."""

    def __init__(self, model: str):
        self.id, self.created, self.model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model

    def whole(self, content: str, finish_reason: str, counts: dict, extra: dict) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "finish_reason": finish_reason,
                             "message": {"role": "assistant", "content": content}}],
                "usage": counts, "raglab": extra}

    def chunk(self, delta: dict, finish_reason: str | None = None, **more) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **more}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def usage_chunk(self, counts: dict) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": counts}
        return f"data: {json.dumps(body)}\n\n"

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"
