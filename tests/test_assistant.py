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
    reply = client.chat.completions.create(model="raglab", messages=[{"role": "user", "content": CMRC_Q}])
    extra = reply.model_extra["raglab"]
    assert extra["route"] == "rag"
    assert len(extra["passages"]) == 3 and extra["passages"][0]["text"] == KB[1]  # BM25 + MiniLM fused: 王磊's
    assert set(extra["timings"]) == {"route_s", "retrieval_s", "generation_s"}
    assert isinstance(reply.choices[0].message.content, str)
    maths = client.chat.completions.create(model="raglab", messages=[{"role": "user", "content": GSM8K_Q}])
    assert maths.model_extra["raglab"]["route"] == "math" and maths.model_extra["raglab"]["passages"] == []
    assert maths.choices[0].message.content.startswith("<think>")  # the maths route's think prefix
    with pytest.raises(Exception, match="400"):
        client.chat.completions.create(model="raglab", messages=[{"role": "system", "content": "no question"}])


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
