"""The OpenAI-compatible client against a local test double, and checkpoint resumption rules."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fake_vllm_server import send_json

from raglab.models.trainer import checkpoint_to_resume, run_fingerprint
from raglab.serving.client import Endpoint, chat_all


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with the last user message reversed; records what it saw."""

    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.seen.append({"auth": self.headers.get("Authorization"), **body})
        text = body["messages"][-1]["content"][::-1]
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": text}}]}
        send_json(self, 200, reply)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeOpenAI.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_external_system_gets_key_from_env_and_answers_in_order(fake_server, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-test-123")
    chats = [[{"role": "user", "content": f"question {i}"}] for i in range(20)]
    replies = chat_all(Endpoint(fake_server, "hosted-model", "FAKE_API_KEY"), chats, max_tokens=8, concurrency=4)
    assert replies == [f"question {i}"[::-1] for i in range(20)]
    assert {s["auth"] for s in FakeOpenAI.seen} == {"Bearer sk-test-123"}
    assert {(s["model"], s["temperature"], s["max_tokens"]) for s in FakeOpenAI.seen} == {("hosted-model", 0.0, 8)}


def test_missing_api_key_variable_is_a_clear_error(fake_server, monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="NOT_SET_KEY"):
        chat_all(Endpoint(fake_server, "m", "NOT_SET_KEY"), [[{"role": "user", "content": "q"}]], max_tokens=4)


def test_checkpoints_resume_only_the_same_run(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"a": 1}\n')
    ckpt = tmp_path / "ckpt"
    fp = run_fingerprint({"lr": 1e-4}, {"model": "m"}, [str(data)])
    assert checkpoint_to_resume(ckpt, fp) is False          # nothing yet
    (ckpt / "checkpoint-10").mkdir()
    assert checkpoint_to_resume(ckpt, fp) is True           # interrupted run: resume
    other = run_fingerprint({"lr": 2e-4}, {"model": "m"}, [str(data)])
    assert checkpoint_to_resume(ckpt, other) is False       # changed params: start fresh
    assert not (ckpt / "checkpoint-10").exists()
    data.write_text('{"a": 2}\n')
    assert run_fingerprint({"lr": 2e-4}, {"model": "m"}, [str(data)]) != other  # changed data too
