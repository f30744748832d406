"""A stand-in for vLLM's API server in pool tests (a test double: it lives in tests/ only).

``python tests/fake_vllm_server.py --port N`` answers ``/health``, lists ``base`` and the adapters loaded so far on
``/v1/models``, and loads an adapter on ``POST /v1/load_lora_adapter`` (its path must exist), as vLLM does with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``; it starts in a second, where vLLM takes a minute.
"""

from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

loaded: list[str] = []


def send_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    """A JSON response with its length (HTTP/1.1 keep-alive clients need it)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/health":
            self.reply(200, {})
        elif self.path == "/v1/models":
            self.reply(200, {"data": [{"id": name} for name in ["base", *loaded]]})
        else:
            self.reply(404, {"error": self.path})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/load_lora_adapter" and os.path.isdir(body["lora_path"]):
            loaded.append(body["lora_name"])
            self.reply(200, {})
        else:
            self.reply(400, {"error": f"cannot {self.path} {body}"})

    def reply(self, status: int, body: dict) -> None:
        send_json(self, status, body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    HTTPServer(("127.0.0.1", parser.parse_args().port), Handler).serve_forever()
