"""The RAG system as an assistant people can talk to: an OpenAI-compatible chat endpoint and a chat page.

``python -m raglab.assistant [--rev EXPERIMENT]`` (``make assistant``) serves, on one FastAPI server
bound to 127.0.0.1 by default:

- ``POST /v1/chat/completions``: the last user message is routed (params ``serve_infer.rag.router``);
  a maths question goes to the generator directly with the distillation prompt (its reply starts
  with ``serve_infer.math.think_prefix``, as at eval), anything else through retrieval: the top
  ``serve_infer.rag.top_k`` passages of the knowledge base fill the training template. The reply is
  an ordinary ``chat.completion``, plus a ``raglab`` field with the route, the passages and the
  time each step took, so any OpenAI client works;
- ``/ui``: Gradio's chat interface showing the answer, the route taken and the retrieved passages.

The models are the trained ones (``models/embedder``, ``models/llm-adapter``) of the workspace, or
of experiment ``--rev`` (copied out of DVC's cache into ``.cache/assistant/<commit>``); the base models
when none was trained. The generator is served with vLLM, as serve_infer serves it, for as long
as the assistant runs. The knowledge base is the eval split's passages (build_sft), and the
embedding router the one serve_infer@rag trained.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .client import Endpoint
from .params import load_params
from .prompts import chat_messages, render_question
from .rag import Retrievers, rag_messages, read_kb
from .routing import MATH, ROUTER_MAX_TOKENS, EmbeddingRouter, route_from_reply, router_messages

log = logging.getLogger("raglab")

# where the pipeline leaves what the assistant needs, relative to the repository
PATHS = {"params": "params.yaml", "kb": "data/sft/eval/test_kb.jsonl", "embedder": "models/embedder",
         "llm": "models/base/llm", "adapter": "models/llm-adapter", "router": "data/infer/rag/router"}


def materialise(rev: str | None, cache: Path) -> dict[str, Path]:
    """The files of ``PATHS`` that exist: in the workspace, or (``rev``: an experiment name or git revision)
    copied out of DVC's cache."""
    if rev is None:
        return {k: Path(p) for k, p in PATHS.items() if Path(p).exists()}
    from .profiles import experiment_files

    return experiment_files(rev, PATHS, cache)


@dataclass
class Reply:
    answer: str
    route: str
    passages: list[dict] = field(default_factory=list)  # {"text", "score"}, best first
    timings: dict[str, float] = field(default_factory=dict)  # seconds: route, retrieval, generation


class Assistant:
    """Route, retrieve, generate: one question at a time (the web server runs it in a worker thread)."""

    def __init__(self, params: dict, kb: list[str], tuned_embedder: str | None, router_dir: str | None,
                 endpoint: Endpoint, retriever: str):
        from openai import OpenAI

        self.params, self.endpoint = params, endpoint
        self.rag, self.math = params["serve_infer"]["rag"], params["serve_infer"]["math"]
        self.retrievers = Retrievers(kb, params, tuned_embedder)
        if retriever not in self.retrievers.available():
            raise click.ClickException(f"assistant.retriever {retriever!r} needs a trained embedder "
                                       f"(available: {self.retrievers.available()})")
        self.retriever = retriever
        self.client = OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key(),
                             timeout=params["serving"]["timeout_s"], max_retries=params["serving"]["max_retries"])
        self.router = None
        if self.rag["router"]["kind"] == "embedding":
            if router_dir is None:
                raise click.ClickException("the embedding router is trained by serve_infer@rag: run the pipeline "
                                           "(or make demo and --rev demo), or set serve_infer.rag.router.kind llm")
            self.router = EmbeddingRouter.load(router_dir, self.retrievers.embedder("base"))
        self.retrievers.search(retriever, ["warm-up"], 1)  # encode the knowledge base now, not on the first question

    def chat(self, messages: list[dict], max_tokens: int, extra_body: dict | None = None) -> str:
        response = self.client.chat.completions.create(
            model=self.endpoint.model, messages=messages, max_tokens=max_tokens,
            temperature=self.rag["temperature"], extra_body=extra_body)
        return response.choices[0].message.content or ""

    def route(self, question: str) -> str:
        if self.router is not None:
            return self.router.route([question])[0]
        r = self.rag["router"]
        return route_from_reply(self.chat(router_messages(r["prompt"], self.params["prompt"]["system"], question),
                                         ROUTER_MAX_TOKENS))

    def answer(self, question: str) -> Reply:
        timings, started = {}, time.perf_counter()
        route = self.route(question)
        timings["route_s"] = time.perf_counter() - started
        if route == MATH:  # as serve_infer@math asks the local students: the assistant turn starts with the prefix
            user = render_question(self.params["distill_cot"]["prompt"], question)
            prefix = self.math["think_prefix"]
            messages = chat_messages(self.params["prompt"]["system"], user) + [{"role": "assistant", "content": prefix}]
            started = time.perf_counter()
            answer = prefix + self.chat(messages, self.math["max_tokens"],
                                        {"continue_final_message": True, "add_generation_prompt": False})
            timings["generation_s"] = time.perf_counter() - started
            return Reply(answer, route, [], timings)
        started = time.perf_counter()
        (ranking,) = self.retrievers.search(self.retriever, [question], self.rag["top_k"])
        passages = [{"text": self.retrievers.kb[j], "score": round(score, 4)} for j, score in ranking]
        timings["retrieval_s"] = time.perf_counter() - started
        started = time.perf_counter()
        answer = self.chat(rag_messages(self.params["prompt"], question, [p["text"] for p in passages]),
                           self.rag["max_tokens"])
        timings["generation_s"] = time.perf_counter() - started
        return Reply(answer, route, passages, timings)


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def create_app(assistant: Assistant):
    """FastAPI app: the OpenAI-compatible endpoint and the Gradio chat page at /ui."""
    import gradio as gr
    from fastapi import FastAPI, HTTPException
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import RedirectResponse, Response

    app = FastAPI(title="raglab assistant")
    model_name = f"raglab-{assistant.retriever}+{assistant.endpoint.model}"

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "raglab"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: dict) -> dict:
        if request.get("stream"):
            raise HTTPException(400, "stream=true is not supported")
        users = [m for m in request.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        question = _text(users[-1].get("content")).strip() if users else ""
        if not question:
            raise HTTPException(400, "the request needs a user message with text")
        reply = await run_in_threadpool(assistant.answer, question)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply.answer}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "raglab": {"route": reply.route, "passages": reply.passages,
                       "timings": {k: round(v, 4) for k, v in reply.timings.items()}},
        }

    def respond(message: str, history: list) -> list:
        reply = assistant.answer(message)
        route = {"math": "maths: straight to the model", "rag": f"retrieval ({assistant.retriever}, "
                                                                   f"top {len(reply.passages)}) then the model"}
        shown = [gr.ChatMessage(content=reply.answer or "(empty answer)"),
                 gr.ChatMessage(content=route.get(reply.route, reply.route),
                                metadata={"title": f"Route: {reply.route}"})]
        if reply.passages:
            listed = "\n\n".join(f"{i}. ({p['score']}) {p['text']}" for i, p in enumerate(reply.passages, start=1))
            shown.append(gr.ChatMessage(content=listed, metadata={"title": "Retrieved passages"}))
        return shown

    with gr.Blocks(title="raglab assistant") as page:
        gr.ChatInterface(respond, title="raglab assistant",
                         description=f"Retriever {assistant.retriever}, generator {assistant.endpoint.model}. "
                                     "Maths questions go to the model directly; others through retrieval.",
                         chatbot=gr.Chatbot(elem_id="chat", height=640),
                         textbox=gr.Textbox(placeholder="Ask a question", elem_id="question", submit_btn=True),
                         api_visibility="private", flagging_mode="never")
    app = gr.mount_gradio_app(app, page, path="/ui", footer_links=[], ssr_mode=False)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:  # browsers ask for one: no icon, and no 404 in the page's console
        return Response(status_code=204)

    return app


@contextlib.contextmanager
def serve_in_thread(app, host: str, port: int) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; its base URL while the block runs."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the assistant's web server did not start on {host}:{port}")
        time.sleep(0.1)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Shown:
    """What the chat page showed for one question."""
    messages: list[str]  # the assistant's message bubbles: the answer, then the route and passages (titled)
    titles: list[str]    # the titles of the route and passages panels


def converse(url: str, questions: list[str], png: Path | None = None, timeout_s: float = 300) -> list[Shown]:
    """Ask ``questions`` on the chat page at ``url`` in headless Chromium, one after another, waiting for each
    reply; optionally save a screenshot of the conversation."""
    import re

    from playwright.sync_api import expect

    from .browser import chromium_page

    shown = []
    with chromium_page(width=1200, height=1100) as page:
        page.goto(url)
        box = page.locator("#question textarea")
        expect(box).to_be_visible(timeout=timeout_s * 1000)
        for question in questions:
            before = page.locator('#chat [data-testid="bot"]').count()
            box.fill(question)
            page.locator('#question [data-testid="submit-button"]').click()
            expect(page.locator('#chat [data-testid="bot"]')).not_to_have_count(before, timeout=timeout_s * 1000)
            tracker = page.locator('#question [data-testid="status-tracker"]')
            expect(tracker).to_have_class(re.compile(r"\bhide\b"), timeout=timeout_s * 1000)
            bots = page.locator('#chat [data-testid="bot"]')
            messages = [bots.nth(i).inner_text() for i in range(before, bots.count())]
            titles = page.locator("#chat .thought-group .title").all_inner_texts()
            shown.append(Shown(messages, titles))
        if png is not None:
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True, animations="disabled")
        if page.errors:
            raise RuntimeError(f"the chat page reported errors: {page.errors}")
    return shown


def start(params_file: str | os.PathLike | None, rev: str | None, stack: ExitStack, log_dir: Path,
          cache: Path = Path(".cache/assistant")) -> tuple[Assistant, dict]:
    """The assistant on the pipeline's outputs (or experiment ``rev``'s), its generator served until ``stack``
    closes; also the params it runs with."""
    from .serving import BASE_NAME, SFT_NAME, local_endpoints

    found = materialise(rev, cache)
    params = load_params(params_file or found.get("params", "params.yaml"))
    a = params["assistant"]
    for needed in ("kb", "llm"):
        if needed not in found:
            raise click.ClickException(f"{PATHS[needed]} is missing{f' in {rev}' if rev else ''}: run the pipeline "
                                       "(dvc repro, or make demo and --rev demo)")
    generator = a["generator"] if "adapter" in found or a["generator"] == BASE_NAME else BASE_NAME
    if generator != a["generator"]:
        log.warning("assistant: no trained adapter (%s): the base LLM answers", PATHS["adapter"])
    systems = local_endpoints([generator], found["llm"], found.get("adapter"), params["serving"],
                              trust_remote_code=params["llm"]["trust_remote_code"], log_dir=log_dir)
    stack.callback(systems.close)  # stops the server
    _, endpoint = next(systems)
    tuned = str(found["embedder"]) if "embedder" in found else None
    retriever = a["retriever"] if tuned or a["retriever"] in ("bm25", "base") else "bm25"
    if retriever != a["retriever"]:
        log.warning("assistant: no trained embedder (%s): retrieving with bm25", PATHS["embedder"])
    assistant = Assistant(params, read_kb(found["kb"]), tuned, found.get("router"), endpoint, retriever)
    log.info("assistant: %d passages, retriever %s, generator %s (%s), router %s", len(assistant.retrievers.kb),
             retriever, generator, SFT_NAME if generator == SFT_NAME else "base weights",
             params["serve_infer"]["rag"]["router"]["kind"])
    return assistant, params


@click.command()
@click.option("--params", "params_file", default=None, help="Parameters (default: the experiment's, else params.yaml).")
@click.option("--rev", default=None, help="An experiment (e.g. demo) or git revision whose outputs to serve.")
@click.option("--host", default=None, help="Default: params assistant.host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: params assistant.port.")
@click.option("--ask", "questions", multiple=True, help="Ask this on the chat page (headless Chromium), print what "
              "it showed and stop (repeatable).")
@click.option("--screenshot", "png", type=click.Path(dir_okay=False, path_type=Path),
              help="With --ask: save a screenshot of the conversation.")
def main(params_file: str | None, rev: str | None, host: str | None, port: int | None, questions: tuple[str, ...],
         png: Path | None) -> None:
    """Serve the RAG system: an OpenAI-compatible /v1/chat/completions and a chat page at /ui."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page's server
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    with ExitStack() as stack:
        assistant, params = start(params_file, rev, stack, Path(".cache/assistant/logs"))
        host, port = host or params["assistant"]["host"], port or params["assistant"]["port"]
        if not questions:
            import uvicorn

            click.echo(f"assistant ready: chat page http://{host}:{port}/ui/ , OpenAI-compatible API "
                       f"http://{host}:{port}/v1")
            uvicorn.run(create_app(assistant), host=host, port=port, log_level="warning")
            return
        with serve_in_thread(create_app(assistant), host, port) as url:
            for question, seen in zip(questions, converse(f"{url}/ui/", list(questions), png)):
                click.echo(f"Q: {question}\n" + "\n".join(f"  | {m}" for m in seen.messages))
        if png:
            click.echo(f"wrote {png}")


if __name__ == "__main__":
    from .errors import run
    from .report import setup_logging

    setup_logging()
    run(main)
