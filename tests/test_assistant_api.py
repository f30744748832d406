"""The assistant's protocol checks without a model: requests field by field, errors in OpenAI's shape, and the
refusal to serve the network without a key."""

import json

import click
import pytest

from raglab.assistant.api import APIError, Completion, parse_request
from raglab.assistant.app import api_key_from, check_exposure

MODEL = "raglab-bm25+sft"


def parse(**body):
    return parse_request(json.dumps({"model": MODEL, **body}).encode(), MODEL, 2048)


def test_a_conversation_keeps_user_and_assistant_turns_and_ends_with_the_question():
    chat = parse(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "一？"},
                           {"role": "assistant", "content": [{"type": "text", "text": "二"}]},
                           {"role": "user", "content": " 三？ "}], stream=True,
                 stream_options={"include_usage": True}, max_completion_tokens=64, temperature=0)
    assert chat.messages == [{"role": "user", "content": "一？"}, {"role": "assistant", "content": "二"},
                             {"role": "user", "content": " 三？ "}]
    assert (chat.question, chat.max_tokens, chat.temperature, chat.stream, chat.include_usage) == (
        " 三？ ", 64, 0.0, True, True)


@pytest.mark.parametrize("body, status, param, code", [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}, 404, "model", "model_not_found"),
    ({"messages": []}, 400, "messages", None),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, 400, "messages", None),
    ({"messages": [{"role": "user", "content": "  "}]}, 400, "messages", None),
    ({"messages": [{"role": "robot", "content": "q"}]}, 400, "messages[0].role", None),
    ({"messages": [{"role": "user", "content": 3}]}, 400, "messages[0].content", None),
    ({"messages": [{"role": "user", "content": "q"}], "max_tokens": -1}, 400, "max_tokens", "invalid_value"),
    ({"messages": [{"role": "user", "content": "q"}], "max_tokens": 4096}, 400, "max_tokens", "invalid_value"),
    ({"messages": [{"role": "user", "content": "q"}], "max_tokens": 1.5}, 400, "max_tokens", "invalid_type"),
    ({"messages": [{"role": "user", "content": "q"}], "max_tokens": True}, 400, "max_tokens", "invalid_type"),
    ({"messages": [{"role": "user", "content": "q"}], "temperature": 2.5}, 400, "temperature", "invalid_value"),
    ({"messages": [{"role": "user", "content": "q"}], "n": 2}, 400, "n", "invalid_value"),
])
def test_bad_requests_name_the_field(body, status, param, code):
    with pytest.raises(APIError) as caught:
        parse_request(json.dumps({"model": MODEL, **body}).encode(), MODEL, 2048)
    e = caught.value
    assert (e.status, e.param, e.code) == (status, param, code)
    assert set(e.body()["error"]) == {"message", "type", "param", "code"} and e.message


def test_a_body_that_is_not_json():
    with pytest.raises(APIError, match="not JSON"):
        parse_request(b"{nope", MODEL, 2048)


def test_chunks_are_server_sent_events_of_one_completion():
    completion = Completion(MODEL)
    first = completion.chunk({"role": "assistant", "content": ""}, raglab={"route": "rag"})
    last = completion.chunk({}, "stop")
    for event in (first, last):
        assert event.startswith("data: ") and event.endswith("\n\n")
    a, b = (json.loads(e[len("data: "):]) for e in (first, last))
    assert a["id"] == b["id"] and a["object"] == "chat.completion.chunk" and a["raglab"] == {"route": "rag"}
    assert b["choices"][0]["finish_reason"] == "stop" and completion.done() == "data: [DONE]\n\n"


@pytest.mark.parametrize("host, key, insecure, refused", [
    ("127.0.0.1", None, False, False), ("localhost", None, False, False), ("::1", None, False, False),
    ("0.0.0.0", None, False, True), ("192.168.1.5", None, False, True), ("example.org", None, False, True),
    ("0.0.0.0", "k", False, False), ("0.0.0.0", None, True, False),
])
def test_the_network_needs_a_key_unless_insecure(host, key, insecure, refused):
    if refused:
        with pytest.raises(click.UsageError, match="give an API key"):
            check_exposure(host, key, insecure)
    else:
        check_exposure(host, key, insecure)


def test_the_key_comes_from_the_environment_only(monkeypatch):
    monkeypatch.setenv("RAGLAB_TEST_KEY", "sk-planted-env-1")
    assert api_key_from("RAGLAB_TEST_KEY") == "sk-planted-env-1" and api_key_from(None) is None
    monkeypatch.delenv("RAGLAB_TEST_KEY")
    with pytest.raises(click.UsageError, match="RAGLAB_TEST_KEY: the environment variable is not set"):
        api_key_from("RAGLAB_TEST_KEY")
