"""The assistant end to end on CPU: the tiny LLM served by vLLM as the generator, MiniLM as the embedder,
a knowledge base of synthetic passages and an embedding router; asked through its OpenAI-compatible
endpoint (any client) and through its chat page in headless Chromium (Debian's chromium, via
Playwright). The tiny model's answers are noise: the checks are on the route, the passages and the
page, not on the answers."""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from raglab.experiments.profiles import flatten
from raglab.params.loader import load_profile
from raglab.params.schema import validate
from raglab.rag.kb import write_kb
from raglab.rag.routing import EmbeddingRouter
from raglab.retriever.search import EmbedderConfig, load_embedder

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

KB = ["林晓是一位建筑师，出生于苏州，代表作是《远山》。", "王磊在成都开了一家面馆，每天卖出三百碗面。",
      "陈静是青岛的医生，她在2019年获得了医学奖。", "赵敏写了小说《海潮》，讲述厦门渔民的故事。",
      "周航在大连教音乐，他的学生参加了比赛。"]
CMRC_Q = "王磊的面馆开在哪个城市？"
GSM8K_Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, minilm_dir, tiny_llm, params):
    """What the pipeline leaves for the assistant: params, knowledge base, models, router."""
    root = tmp_path_factory.mktemp("assistant")
    params = json.loads(json.dumps(params))
    import os

    os.environ["MINILM_DIR"], os.environ["TINY_LLM_DIR"] = minilm_dir, tiny_llm  # the demo profile's $VARS
    for dotted, value in flatten(load_profile(str(REPO / "profiles" / "demo.yaml"))):
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    write_kb(root / "data/sft/eval/test_kb.jsonl", KB)
    shutil.copytree(tiny_llm, root / "models/base/llm")
    shutil.copytree(minilm_dir, root / "models/embedder")  # stands in for a tuned embedder
    embedder = load_embedder(EmbedderConfig.of(validate(params).embedder))
    maths = [f"Tom has {n} apples and buys {n + 3} more. How many apples does he have?" for n in range(10)]
    reading = ["林晓的代表作是什么？", "陈静哪一年获奖？", "谁写了《海潮》？", "周航在哪里教音乐？", "苏州在哪个省？",
               "成都有什么？", "青岛的医生是谁？", "比赛在哪里？", "小说讲了什么？", "面馆卖什么？"]
    EmbeddingRouter.fit(embedder, maths, reading, seed=0).save(root / "data/infer/rag/router", {})
    return root


@pytest.fixture(scope="module")
def served(workspace):
    """The assistant's web server (API and page) on a free port, its generator served by vLLM."""
    import os

    from raglab.assistant.server import create_app, serve_in_thread
    from raglab.assistant.system import start
    from raglab.serving.vllm import free_port

    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        with ExitStack() as stack:
            assistant, _ = start(None, None, stack, workspace / "logs", cache=workspace / ".cache")
            with serve_in_thread(create_app(assistant), "127.0.0.1", free_port()) as url:
                yield assistant, url
    finally:
        os.chdir(cwd)


def test_openai_clients_get_the_answer_route_and_passages(served):
    from openai import OpenAI

    assistant, url = served
    assert assistant.retriever == "hybrid" and assistant.endpoint.model == "base"  # no adapter: the base LLM
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    (model,) = [m.id for m in client.models.list()]
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": CMRC_Q}])
    extra = reply.model_extra["raglab"]
    assert extra["route"] == "rag"
    assert len(extra["passages"]) == 3 and extra["passages"][0]["text"] == KB[1]  # BM25 + MiniLM fused: 王磊's
    assert set(extra["timings"]) == {"route_s", "retrieval_s", "generation_s"}
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage.prompt_tokens > 50 and reply.usage.completion_tokens > 0  # the template and 3 passages
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    maths = client.chat.completions.create(model=model, messages=[{"role": "user", "content": GSM8K_Q}])
    assert maths.model_extra["raglab"]["route"] == "math" and maths.model_extra["raglab"]["passages"] == []
    assert maths.choices[0].message.content.startswith("<think>")  # the maths route's think prefix
    with pytest.raises(Exception, match="400"):
        client.chat.completions.create(model=model, messages=[{"role": "system", "content": "no question"}])


def test_chat_page_shows_the_reply_route_and_passages(served, tmp_path):
    from raglab.assistant.page import converse

    _, url = served
    png = tmp_path / "assistant.png"
    cmrc, maths = converse(f"{url}/ui/", [CMRC_Q, GSM8K_Q], png)
    assert len(cmrc.messages) == 3  # the answer, the route, the passages
    assert "Route: rag" in cmrc.titles and "Retrieved passages" in cmrc.titles
    assert KB[1] in cmrc.messages[2]
    assert len(maths.messages) == 2 and "Route: math" in maths.titles[-1]
    assert png.stat().st_size > 20_000


def _model(url: str) -> str:
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused").models.list().data[0].id


def test_streaming_through_the_openai_client(served):
    """``stream: true``: chat.completion.chunk events, the route and passages in the first, the text in order,
    a finish reason, the usage when asked, then [DONE] (the client's iterator ends on it)."""
    from openai import OpenAI

    _, url = served
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model=_model(url), messages=[{"role": "user", "content": CMRC_Q}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    first = chunks[0].model_extra["raglab"]
    assert first["route"] == "rag" and first["passages"][0]["text"] == KB[1]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["stop"],
                                                                                                       ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(model=_model(url), messages=[{"role": "user", "content": CMRC_Q}])
    assert text == whole.choices[0].message.content  # greedy decoding: the same answer, streamed or not


def test_follow_up_turns_reach_the_generator(served):
    """History goes to the generator (more prompt tokens for the same last question); retrieval reads the last
    user turn only (the same passages)."""
    from openai import OpenAI

    _, url = served
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    alone = client.chat.completions.create(model=_model(url), messages=[{"role": "user", "content": CMRC_Q}])
    history = [{"role": "user", "content": "陈静哪一年获奖？"}, {"role": "assistant", "content": "2019年。"}]
    follow = client.chat.completions.create(model=_model(url),
                                            messages=history + [{"role": "user", "content": CMRC_Q}])
    assert follow.model_extra["raglab"]["passages"] == alone.model_extra["raglab"]["passages"]
    assert follow.usage.prompt_tokens > alone.usage.prompt_tokens + 5


@pytest.mark.parametrize("change, status, param", [
    ({"model": "gpt-4o"}, 404, "model"),
    ({"max_tokens": -1}, 400, "max_tokens"),
    ({"max_tokens": 10 ** 6}, 400, "max_tokens"),
    ({"temperature": 5}, 400, "temperature"),
    ({"messages": [{"role": "user", "content": "赵" * 200_000}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "赵" * 400_000}]}, 413, None),
])
def test_errors_of_the_right_kind_in_openais_shape(served, change, status, param):
    """Each mistake gets its status and OpenAI's error body through the openai client; an input over the
    generator's context is vLLM's 400 naming the limit in tokens, not a 500."""
    import openai

    _, url = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    body = {"model": _model(url), "messages": [{"role": "user", "content": CMRC_Q}], **change}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**body)
    e = caught.value
    assert e.status_code == status and set(e.body) >= {"message", "type", "param", "code"}, e.body
    assert e.body["param"] == param
    if "赵" * 1000 in str(change) and status == 400:
        assert "tokens" in e.body["message"] and e.body["code"] == "context_length_exceeded"


def test_a_key_when_exposed_and_never_in_the_log(served, caplog):
    """With a key, /v1 wants ``Authorization: Bearer <key>``: none or a wrong one is 401, the right one
    answers; neither the key nor a wrong one reaches the log."""
    import logging

    import openai

    from raglab.assistant.server import create_app, serve_in_thread
    from raglab.serving.vllm import free_port

    assistant, _ = served
    secret, wrong = "sk-planted-assistant-5e1f", "sk-planted-wrong-77aa"
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(create_app(assistant, api_key=secret), "127.0.0.1", free_port()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
        model = client.models.list().data[0].id
        for key in (wrong, "unused"):
            other = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                other.models.list()
            with pytest.raises(openai.AuthenticationError):
                other.chat.completions.create(model=model, messages=[{"role": "user", "content": CMRC_Q}])
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": CMRC_Q}])
        assert reply.model_extra["raglab"]["route"] == "rag"
    assert "assistant: status 200" in caplog.text and "status 401" in caplog.text
    assert secret not in caplog.text and wrong not in caplog.text


def test_a_burst_beyond_the_limit_gets_429_with_retry_after(served):
    """At most ``assistant.max_in_flight`` requests at once: the rest of a burst is refused with 429 and
    Retry-After, not queued; every request is answered one way or the other, none with a 500."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from raglab.assistant.server import create_app, serve_in_thread
    from raglab.serving.vllm import free_port

    assistant, _ = served
    limits = assistant.params.assistant.model_copy(update={"max_in_flight": 2})
    with serve_in_thread(create_app(assistant, limits=limits), "127.0.0.1", free_port()) as url:
        body = {"model": _model(url), "messages": [{"role": "user", "content": CMRC_Q}], "max_tokens": 32}
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda _: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300),
                                    range(12)))
    statuses = sorted(r.status_code for r in replies)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2, statuses
    refused = [r for r in replies if r.status_code == 429]
    assert all(r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "rate_limit_exceeded"
               for r in refused)
