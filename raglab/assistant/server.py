"""The assistant over HTTP: an OpenAI-compatible ``/v1/chat/completions`` and a Gradio chat page at ``/ui``."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

from raglab.assistant.system import Assistant


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
