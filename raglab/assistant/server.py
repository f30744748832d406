"""The assistant over HTTP: an OpenAI-compatible ``/v1/chat/completions`` (whole replies or server-sent events) and
a Gradio chat page at ``/ui``.

Every request is checked (``raglab.assistant.api``) and every failure answered in OpenAI's error shape: 400 for a
bad field or an input over the generator's context (vLLM's message names the limit in tokens), 401 for a missing
or wrong key, 404 for an unknown model, 413 for a body over ``assistant.max_request_bytes``, 429 with
``Retry-After`` beyond ``assistant.max_in_flight`` requests, 502 when the generator fails; 500 only when the server
itself fails (the log has the traceback). One log line per request: route, step times, tokens, status.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator

from fastapi import Request  # FastAPI resolves the endpoints' annotations here
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from raglab.assistant.api import APIError, ChatRequest, Completion, parse_request, usage
from raglab.assistant.system import Assistant, Reply

log = logging.getLogger("raglab")


class InFlight:
    """At most ``limit`` requests at once; one more is refused (429), not queued."""

    def __init__(self, limit: int):
        self.limit, self.count, self.lock = limit, 0, threading.Lock()

    def enter(self) -> None:
        with self.lock:
            if self.count >= self.limit:
                raise APIError(429, f"the assistant is answering {self.limit} requests (assistant.max_in_flight): "
                                    "retry shortly", type="rate_limit_exceeded", code="rate_limit_exceeded",
                               headers={"Retry-After": "1"})
            self.count += 1

    def leave(self) -> None:
        with self.lock:
            self.count -= 1


def generator_error(e: Exception) -> APIError:
    """The generator's refusal (e.g. vLLM's 400 for an input over its context) as the client's error."""
    import openai

    if isinstance(e, openai.APIStatusError) and e.status_code == 400:
        message = (e.body or {}).get("message") if isinstance(e.body, dict) else None
        message = message or str(e)
        code = "context_length_exceeded" if "context length" in message.lower() else None
        return APIError(400, message, param="messages", code=code)
    return APIError(502, f"the generator failed: {type(e).__name__}: {e}", type="api_error")


def _log_request(status: int, reply: Reply | None, started: float, note: str = "") -> None:
    t = {k: round(v * 1000) for k, v in (reply.timings if reply else {}).items()}
    log.info("assistant: status %d route %s route_ms %s retrieval_ms %s rerank_ms %s generation_ms %s tokens %s+%s "
             "total_ms %d%s", status, reply.route if reply else "-", t.get("route_s", "-"), t.get("retrieval_s", "-"),
             t.get("rerank_s", "-"), t.get("generation_s", "-"), reply.usage["prompt_tokens"] if reply else 0,
             reply.usage["completion_tokens"] if reply else 0, round((time.perf_counter() - started) * 1000),
             f" ({note})" if note else "")


def create_app(assistant: Assistant, api_key: str | None = None, limits=None):
    """FastAPI app: the OpenAI-compatible endpoint and the chat page at /ui; ``api_key``: required as
    ``Authorization: Bearer`` on /v1 and asked for on the page; ``limits``: params ``assistant`` (the
    assistant's own by default)."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from starlette.background import BackgroundTask
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or assistant.params.assistant
    app = FastAPI(title="raglab assistant")
    model_name = f"raglab-{assistant.retriever}+{assistant.endpoint.model}"
    in_flight = InFlight(limits.max_in_flight)

    def error_response(e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if e.status_code == 404 else None
        return error_response(APIError(e.status_code, str(e.detail), code=code))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(APIError(400, str(e.errors())))

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("assistant: internal error on %s", request.url.path)
        return error_response(APIError(500, f"internal server error ({type(e).__name__}): see the assistant's log",
                                       type="server_error"))

    def authorise(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "a valid API key is required (Authorization: Bearer <key>)", code="invalid_api_key")

    @app.get("/v1/models")
    def models(request: Request) -> dict:
        authorise(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "raglab"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        try:
            authorise(request)
            size = request.headers.get("content-length")
            if size and size.isdigit() and int(size) > limits.max_request_bytes:
                raise APIError(413, f"the request body is {size} bytes, over the limit of {limits.max_request_bytes} "
                                    "(assistant.max_request_bytes)", code="request_too_large")
            raw = await request.body()
            if len(raw) > limits.max_request_bytes:
                raise APIError(413, f"the request body is over the limit of {limits.max_request_bytes} bytes "
                                    "(assistant.max_request_bytes)", code="request_too_large")
            chat = parse_request(raw, model_name, assistant.params.serving.max_model_len)
            in_flight.enter()
        except APIError as e:
            _log_request(e.status, None, started, e.message[:200])
            raise
        if chat.stream:
            # the slot is freed once the response ends, sent or cut off by the client
            return StreamingResponse(_stream(chat, started), media_type="text/event-stream",
                                     background=BackgroundTask(in_flight.leave))
        reply = None
        try:
            turn = await run_in_threadpool(assistant.prepare, chat.messages, chat.max_tokens, chat.temperature)
            reply = turn.reply
            try:
                await run_in_threadpool(assistant.generate, turn)
            except Exception as e:
                raise generator_error(e) from e
        except APIError as e:
            _log_request(e.status, reply, started, e.message[:200])
            raise
        finally:
            in_flight.leave()
        _log_request(200, reply, started)
        counts = usage(reply.usage["prompt_tokens"], reply.usage["completion_tokens"])
        return JSONResponse(Completion(model_name).whole(reply.answer, reply.finish_reason, counts, _extra(reply)))

    def _stream(chat: ChatRequest, started: float) -> Iterator[str]:
        """Server-sent events: the route and passages in the first chunk's ``raglab`` field, the text as it comes,
        the finish reason, the usage when asked (``stream_options.include_usage``), ``[DONE]``. An error after
        the first chunk is sent as an ``error`` event (the status is already 200)."""
        completion, reply = Completion(model_name), None
        try:
            turn = assistant.prepare(chat.messages, chat.max_tokens, chat.temperature)
            reply = turn.reply
            yield completion.chunk({"role": "assistant", "content": ""}, raglab=_extra(reply))
            try:
                for piece in assistant.stream(turn):
                    yield completion.chunk({"content": piece})
            except Exception as e:
                raise generator_error(e) from e
            yield completion.chunk({}, reply.finish_reason, raglab={"timings": _timings(reply)})
            if chat.include_usage:
                yield completion.usage_chunk(usage(reply.usage["prompt_tokens"], reply.usage["completion_tokens"]))
            yield completion.done()
            _log_request(200, reply, started, "stream")
        except APIError as e:
            _log_request(e.status, reply, started, f"stream: {e.message[:200]}")
            yield f"data: {json.dumps(e.body())}\n\n"

    page = chat_page(assistant, api_key)
    app = gr.mount_gradio_app(app, page, path="/ui", footer_links=[], ssr_mode=False)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:  # browsers ask for one: no icon, and no 404 in the page's console
        return Response(status_code=204)

    return app


def _timings(reply: Reply) -> dict:
    return {k: round(v, 4) for k, v in reply.timings.items()}


def _extra(reply: Reply) -> dict:
    return {"route": reply.route, "passages": reply.passages, "timings": _timings(reply)}


def chat_page(assistant: Assistant, api_key: str | None):
    """The Gradio chat page: the answer as it is written, then the route and the passages; earlier turns go to
    the generator as history. With a key set, the page asks for it."""
    import gradio as gr

    routes = {"math": "maths: straight to the model",
              "rag": f"retrieval ({assistant.retriever}, top {assistant.rag.top_k}) then the model"}

    def respond(message: str, history: list, key: str = ""):
        if api_key is not None and not hmac.compare_digest((key or "").encode(), api_key.encode()):
            raise gr.Error("Enter the assistant's API key (the field below the chat).")
        turns = [{"role": m["role"], "content": m["content"]} for m in history
                 if isinstance(m, dict) and not (m.get("metadata") or {}).get("title")
                 and isinstance(m.get("content"), str)]
        turn = assistant.prepare(turns + [{"role": "user", "content": message}])
        reply = turn.reply
        shown = [gr.ChatMessage(content=routes.get(reply.route, reply.route),
                                metadata={"title": f"Route: {reply.route}"})]
        if reply.passages:
            listed = "\n\n".join(f"{i}. ({p['score']}) {p['text']}" for i, p in enumerate(reply.passages, start=1))
            shown.append(gr.ChatMessage(content=listed, metadata={"title": "Retrieved passages"}))
        for _ in assistant.stream(turn):
            yield [gr.ChatMessage(content=reply.answer), *shown]
        yield [gr.ChatMessage(content=reply.answer or "(empty answer)"), *shown]

    with gr.Blocks(title="raglab assistant") as page:
        key_box = gr.Textbox(label="API key", type="password", elem_id="api-key", render=False)
        gr.ChatInterface(respond, title="raglab assistant",
                         description=f"Retriever {assistant.retriever}, generator {assistant.endpoint.model}. "
                                     "Maths questions go to the model directly; others through retrieval.",
                         chatbot=gr.Chatbot(elem_id="chat", height=640),
                         textbox=gr.Textbox(placeholder="Ask a question", elem_id="question", submit_btn=True),
                         additional_inputs=[key_box] if api_key is not None else None,
                         additional_inputs_accordion="API key",
                         api_visibility="private", flagging_mode="never")
    return page


@contextlib.contextmanager
def serve_in_thread(app, host: str, port: int) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; its base URL while the block runs."""
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
