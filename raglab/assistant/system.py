"""The assistant's RAG system on the pipeline's outputs (the workspace's or an experiment's): route, retrieve,
answer; the generator served with vLLM for as long as the assistant runs."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import click

from raglab.core.prompts import chat_messages, render_question
from raglab.params.loader import load_params
from raglab.params.schema import Params
from raglab.rag.kb import read_chunks, read_kb
from raglab.rag.routing import MATH, ROUTER_MAX_TOKENS, route_from_reply
from raglab.rag.system import RagSystem
from raglab.serving.client import Endpoint

log = logging.getLogger("raglab")

# where the pipeline leaves what the assistant needs, relative to the repository
PATHS = {"params": "params.yaml", "kb": "data/sft/eval/test_kb.jsonl", "chunks": "data/own/chunks/chunks.jsonl",
         "embedder": "models/embedder",
         "reranker": "models/reranker", "llm": "models/base/llm", "adapter": "models/llm-adapter", "router": "data/infer/rag/router"}


def materialise(rev: str | None, cache: Path) -> dict[str, Path]:
    """The files of ``PATHS`` that exist: in the workspace, for a recorded run (``results/<rev>/``, its adapter
    committed: ``raglab.assistant.records``), or (``rev``: an experiment name or git revision) copied out of
    DVC's cache."""
    if rev is None:
        return {k: Path(p) for k, p in PATHS.items() if Path(p).exists()}
    from raglab.assistant.records import is_record, record_workspace
    from raglab.experiments.dvc import experiment_files

    if is_record(rev):
        return record_workspace(rev, cache)

    return experiment_files(rev, PATHS, cache)


@dataclass
class Reply:
    answer: str
    route: str
    passages: list[dict] = field(default_factory=list)  # {"text", "score"}, best first
    timings: dict[str, float] = field(default_factory=dict)  # seconds: route, retrieval (rerank), generation
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    finish_reason: str = "stop"


@dataclass
class Turn:
    """A question routed and its passages retrieved: what the generator is asked, and how."""
    reply: Reply  # route, passages and timings so far; the answer starts with ``prefix``
    messages: list[dict] | None  # None: nothing to ask (no passage passed the reranker's threshold: answered)
    max_tokens: int
    temperature: float
    extra_body: dict | None = None


class Assistant:
    """Route, retrieve, generate, for any number of requests at once (the web server runs each in a worker
    thread). Retrieval and routing read the last user turn; the generator gets the conversation: the system
    prompt, the earlier turns as they were, and the last user turn in the training template (rag) or the
    distillation prompt (maths)."""

    def __init__(self, params: Params, kb: list[str], tuned_embedder: str | None, router_dir: str | None,
                 endpoint: Endpoint, retriever: str, tuned_reranker: str | None = None, llm: str | None = None,
                 adapter: str | None = None):
        from openai import OpenAI

        self.params, self.endpoint = params, endpoint
        self.rag, self.math = params.rag, params.serve_infer.math
        if self.rag.router.kind == "embedding" and router_dir is None:
            raise click.ClickException("the embedding router is trained by serve_infer_rag: run the pipeline "
                                       "(or make demo and --rev demo), or set rag.router.kind llm")
        self.system = RagSystem.build(params, kb, tuned_embedder=tuned_embedder, tuned_reranker=tuned_reranker,
                                      router_dir=router_dir, llm=llm, adapter=adapter)
        if retriever not in self.system.retrievers.available():
            raise click.ClickException(f"assistant.retriever {retriever!r} needs a trained model "
                                       f"(available: {self.system.retrievers.available()})")
        self.retriever = retriever
        self.client = OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key(),
                             timeout=params.serving.timeout_s, max_retries=params.serving.max_retries)
        self.search_lock = threading.Lock()  # the retrievers' encoders are not shared between threads
        self.system.rank(retriever, ["warm-up"], 1)  # encode the knowledge base now, not on the first question

    def route(self, question: str, usage: dict[str, int]) -> str:
        if self.system.router is not None:
            with self.search_lock:
                return self.system.router.route([question])[0]
        response = self.client.chat.completions.create(
            model=self.endpoint.model, messages=self.system.router_chats([question])[0],
            max_tokens=ROUTER_MAX_TOKENS, temperature=0.0)
        _add_usage(usage, response.usage)
        return route_from_reply(response.choices[0].message.content or "")

    def prepare(self, messages: list[dict], max_tokens: int | None = None, temperature: float | None = None) -> Turn:
        """Route the last user turn of ``messages`` and retrieve its passages."""
        question, history = messages[-1]["content"].strip(), messages[:-1]
        reply, started = Reply("", ""), time.perf_counter()
        reply.route = self.route(question, reply.usage)
        reply.timings["route_s"] = time.perf_counter() - started
        temperature = self.rag.temperature if temperature is None else temperature
        if reply.route == MATH:  # as serve_infer_math asks the students: the assistant turn starts with the prefix
            user = render_question(self.params.distill_cot.prompt, question)
            reply.answer = prefix = self.math.think_prefix
            chat = chat_messages(self.params.prompt.system, user)
            return Turn(reply, chat[:-1] + history + chat[-1:] + [{"role": "assistant", "content": prefix}],
                        max_tokens or self.math.max_tokens, temperature,
                        {"continue_final_message": True, "add_generation_prompt": False})
        started = time.perf_counter()
        with self.search_lock:
            (ranking,) = self.system.rank(self.retriever, [question])
            rerank_s = self.system.retrievers.rerank_seconds(self.retriever, 1)
        reply.passages = [{"text": self.system.retrievers.kb[j], "score": round(score, 4)} for j, score in ranking]
        reply.timings["retrieval_s"] = time.perf_counter() - started  # the first stage and the reranking
        if rerank_s:
            reply.timings["rerank_s"] = rerank_s[0]
        if not reply.passages:  # the reranker's threshold kept none: say so rather than answer from nothing
            reply.answer = self.system.no_passage_answer(question)
            return Turn(reply, None, max_tokens or self.rag.max_tokens, temperature)
        chat = self.system.generator_chat(question, [p["text"] for p in reply.passages])
        return Turn(reply, chat[:-1] + history + chat[-1:], max_tokens or self.rag.max_tokens, temperature)

    def _create(self, turn: Turn, **stream):
        return self.client.chat.completions.create(
            model=self.endpoint.model, messages=turn.messages, max_tokens=turn.max_tokens,
            temperature=turn.temperature, extra_body=turn.extra_body, **stream)

    def generate(self, turn: Turn) -> Reply:
        started, reply = time.perf_counter(), turn.reply
        if turn.messages is None:
            return reply
        response = self._create(turn)
        reply.answer += response.choices[0].message.content or ""
        reply.finish_reason = response.choices[0].finish_reason or "stop"
        _add_usage(reply.usage, response.usage)
        reply.timings["generation_s"] = time.perf_counter() - started
        return reply

    def stream(self, turn: Turn) -> Iterator[str]:
        """The answer's text as the generator writes it (the route's prefix first); ``turn.reply`` is complete
        (answer, usage, timings) when the iterator ends."""
        started, reply = time.perf_counter(), turn.reply
        if reply.answer:
            yield reply.answer
        if turn.messages is None:
            return
        for chunk in self._create(turn, stream=True, stream_options={"include_usage": True}):
            if chunk.usage is not None:
                _add_usage(reply.usage, chunk.usage)
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    reply.answer += choice.delta.content
                    yield choice.delta.content
                if choice.finish_reason:
                    reply.finish_reason = choice.finish_reason
        reply.timings["generation_s"] = time.perf_counter() - started


def _add_usage(usage: dict[str, int], counted) -> None:
    if counted is not None:
        usage["prompt_tokens"] += counted.prompt_tokens or 0
        usage["completion_tokens"] += counted.completion_tokens or 0


def start(params_file: str | os.PathLike | None, rev: str | None, stack: ExitStack, log_dir: Path,
          cache: Path = Path(".cache/assistant")) -> tuple[Assistant, dict]:
    """The assistant on the pipeline's outputs (or experiment ``rev``'s), its generator served until ``stack``
    closes; also the params it runs with."""
    from raglab.serving.systems import local_endpoints
    from raglab.serving.vllm import BASE_NAME, SFT_NAME

    found = materialise(rev, cache)
    params = load_params(params_file or found.get("params", "params.yaml"))
    a = params.assistant
    kb = "chunks" if a.knowledge_base == "documents" else "kb"
    for needed in (kb, "llm"):
        if needed not in found:
            raise click.ClickException(f"{PATHS[needed]} is missing{f' in {rev}' if rev else ''}: run the pipeline "
                                       "(dvc repro, or make demo and --rev demo)")
    generator = a.generator if "adapter" in found or a.generator == BASE_NAME else BASE_NAME
    if generator != a.generator:
        log.warning("assistant: no trained adapter (%s): the base LLM answers", PATHS["adapter"])
    systems = local_endpoints([generator], found["llm"], found.get("adapter"), params.serving,
                              trust_remote_code=params.llm.trust_remote_code, log_dir=log_dir)
    stack.callback(systems.close)  # stops the server
    _, endpoint = next(systems)
    tuned = str(found["embedder"]) if "embedder" in found else None
    reranker = str(found["reranker"]) if "reranker" in found else None
    first, plus, second = a.retriever.partition("+")
    if not tuned and first not in ("bm25", "base"):
        log.warning("assistant: no trained embedder (%s): retrieving with bm25", PATHS["embedder"])
        first = "bm25"
    if second == "rerank" and not reranker:
        log.warning("assistant: no trained reranker (%s): no second stage", PATHS["reranker"])
        plus = second = ""
    retriever = first + plus + second
    passages = read_kb(found["kb"]) if kb == "kb" else read_chunks(found["chunks"])
    assistant = Assistant(params, passages, tuned, found.get("router"), endpoint, retriever, reranker,
                          llm=str(found["llm"]), adapter=str(found["adapter"]) if "adapter" in found else None)
    log.info("assistant: %d passages, retriever %s, generator %s (%s), router %s", len(assistant.system.retrievers.kb),
             retriever, generator, SFT_NAME if generator == SFT_NAME else "base weights",
             params.rag.router.kind)
    return assistant, params
