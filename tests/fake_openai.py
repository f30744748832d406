"""A scripted OpenAI-compatible chat server for tests (a test double: it lives in tests/ only).

``FakeOpenAI(script)`` serves ``POST /v1/chat/completions`` on 127.0.0.1 and a free port. For each
request, ``script(request)`` returns an ``Action``: a reply (content, optional ``reasoning_content``,
optional delay; or a whole JSON body of the script's, for other routes and fields) or a failure (an HTTP
status with optional ``Retry-After``, a body that is not JSON, or a connection dropped without a response).
The server records every request and the largest number of requests it was handling at once.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Action:
    content: str = ""
    reasoning: str | None = None
    delay_s: float = 0.0
    status: int = 200
    retry_after: str | None = None
    malformed: bool = False
    drop: bool = False
    prompt_tokens: int = 10
    completion_tokens: int = 20
    message: str | None = None  # a failure's error message (default "scripted <status>")
    body: dict | None = None  # a reply's whole JSON body instead of a chat completion's (other routes, extra fields)


def user_text(request: dict) -> str:
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")


class FakeOpenAI:
    def __init__(self, script: Callable[[dict], Action]):
        self.script = script
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.after_request: Callable[[int], None] | None = None  # called with the request count
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append({"auth": self.headers.get("Authorization"), **body})
                    count = len(fake.requests)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    self.respond(fake.script(body), body)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                    if fake.after_request:
                        fake.after_request(count)

            def respond(self, action: Action, body: dict) -> None:
                time.sleep(action.delay_s)
                if action.drop:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if action.status != 200:
                    data = json.dumps({"error": {"message": action.message or f"scripted {action.status}"}}).encode()
                elif action.malformed:
                    data = b"{this is not json"
                elif action.body is not None:
                    data = json.dumps(action.body).encode()
                else:
                    message = {"role": "assistant", "content": action.content}
                    if action.reasoning is not None:
                        message["reasoning_content"] = action.reasoning
                    data = json.dumps({
                        "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                        "usage": {"prompt_tokens": action.prompt_tokens, "completion_tokens": action.completion_tokens,
                                  "total_tokens": action.prompt_tokens + action.completion_tokens},
                    }).encode()
                self.send_response(action.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if action.retry_after is not None:
                    self.send_header("Retry-After", action.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def ragas_input(request: dict) -> dict:
    """The JSON ragas puts after its few-shot examples ("... following input\\ninput: {...}")."""
    tail = user_text(request).rsplit("following input\ninput: ", 1)[1]
    return json.JSONDecoder().raw_decode(tail)[0]


def schema_title(request: dict) -> str:
    """Which ragas prompt is asked: the verdict schema's name (instructor's JSON_SCHEMA / JSON modes)."""
    response_format = request.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"]["name"]
    system = next((m["content"] for m in request["messages"] if m["role"] == "system"), "")
    return (re.findall(r'"title": "(\w+Output)"', system) or [""])[-1]
