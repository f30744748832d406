"""The assistant's RAG system on the pipeline's outputs (the workspace's or an experiment's): route, retrieve,
answer; the generator served with vLLM for as long as the assistant runs."""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import click

from raglab.core.prompts import chat_messages, render_question
from raglab.params.loader import load_params
from raglab.params.schema import Params
from raglab.rag.kb import read_kb
from raglab.rag.routing import MATH, ROUTER_MAX_TOKENS, route_from_reply
from raglab.rag.system import RagSystem
from raglab.serving.client import Endpoint

log = logging.getLogger("raglab")

# where the pipeline leaves what the assistant needs, relative to the repository
PATHS = {"params": "params.yaml", "kb": "data/sft/eval/test_kb.jsonl", "embedder": "models/embedder",
         "llm": "models/base/llm", "adapter": "models/llm-adapter", "router": "data/infer/rag/router"}


def materialise(rev: str | None, cache: Path) -> dict[str, Path]:
    """The files of ``PATHS`` that exist: in the workspace, or (``rev``: an experiment name or git revision)
    copied out of DVC's cache."""
    if rev is None:
        return {k: Path(p) for k, p in PATHS.items() if Path(p).exists()}
    from raglab.experiments.dvc import experiment_files

    return experiment_files(rev, PATHS, cache)


@dataclass
class Reply:
    answer: str
    route: str
    passages: list[dict] = field(default_factory=list)  # {"text", "score"}, best first
    timings: dict[str, float] = field(default_factory=dict)  # seconds: route, retrieval, generation


class Assistant:
    """Route, retrieve, generate: one question at a time (the web server runs it in a worker thread)."""

    def __init__(self, params: Params, kb: list[str], tuned_embedder: str | None, router_dir: str | None,
                 endpoint: Endpoint, retriever: str):
        from openai import OpenAI

        self.params, self.endpoint = params, endpoint
        self.rag, self.math = params.rag, params.serve_infer.math
        if self.rag.router.kind == "embedding" and router_dir is None:
            raise click.ClickException("the embedding router is trained by serve_infer_rag: run the pipeline "
                                       "(or make demo and --rev demo), or set rag.router.kind llm")
        self.system = RagSystem.build(params, kb, tuned_embedder=tuned_embedder, router_dir=router_dir)
        if retriever not in self.system.retrievers.available():
            raise click.ClickException(f"assistant.retriever {retriever!r} needs a trained embedder "
                                       f"(available: {self.system.retrievers.available()})")
        self.retriever = retriever
        self.client = OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key(),
                             timeout=params.serving.timeout_s, max_retries=params.serving.max_retries)
        self.system.rank(retriever, ["warm-up"], 1)  # encode the knowledge base now, not on the first question

    def chat(self, messages: list[dict], max_tokens: int, extra_body: dict | None = None) -> str:
        response = self.client.chat.completions.create(
            model=self.endpoint.model, messages=messages, max_tokens=max_tokens,
            temperature=self.rag.temperature, extra_body=extra_body)
        return response.choices[0].message.content or ""

    def route(self, question: str) -> str:
        if self.system.router is not None:
            return self.system.router.route([question])[0]
        return route_from_reply(self.chat(self.system.router_chats([question])[0], ROUTER_MAX_TOKENS))

    def answer(self, question: str) -> Reply:
        timings, started = {}, time.perf_counter()
        route = self.route(question)
        timings["route_s"] = time.perf_counter() - started
        if route == MATH:  # as serve_infer_math asks the local students: the assistant turn starts with the prefix
            user = render_question(self.params.distill_cot.prompt, question)
            prefix = self.math.think_prefix
            messages = chat_messages(self.params.prompt.system, user) + [{"role": "assistant", "content": prefix}]
            started = time.perf_counter()
            answer = prefix + self.chat(messages, self.math.max_tokens,
                                        {"continue_final_message": True, "add_generation_prompt": False})
            timings["generation_s"] = time.perf_counter() - started
            return Reply(answer, route, [], timings)
        started = time.perf_counter()
        (ranking,) = self.system.rank(self.retriever, [question])
        passages = [{"text": self.system.retrievers.kb[j], "score": round(score, 4)} for j, score in ranking]
        timings["retrieval_s"] = time.perf_counter() - started
        started = time.perf_counter()
        answer = self.chat(self.system.generator_chat(question, [p["text"] for p in passages]), self.rag.max_tokens)
        timings["generation_s"] = time.perf_counter() - started
        return Reply(answer, route, passages, timings)


def start(params_file: str | os.PathLike | None, rev: str | None, stack: ExitStack, log_dir: Path,
          cache: Path = Path(".cache/assistant")) -> tuple[Assistant, dict]:
    """The assistant on the pipeline's outputs (or experiment ``rev``'s), its generator served until ``stack``
    closes; also the params it runs with."""
    from raglab.serving.systems import local_endpoints
    from raglab.serving.vllm import BASE_NAME, SFT_NAME

    found = materialise(rev, cache)
    params = load_params(params_file or found.get("params", "params.yaml"))
    a = params.assistant
    for needed in ("kb", "llm"):
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
    retriever = a.retriever if tuned or a.retriever in ("bm25", "base") else "bm25"
    if retriever != a.retriever:
        log.warning("assistant: no trained embedder (%s): retrieving with bm25", PATHS["embedder"])
    assistant = Assistant(params, read_kb(found["kb"]), tuned, found.get("router"), endpoint, retriever)
    log.info("assistant: %d passages, retriever %s, generator %s (%s), router %s", len(assistant.system.retrievers.kb),
             retriever, generator, SFT_NAME if generator == SFT_NAME else "base weights",
             params.rag.router.kind)
    return assistant, params
