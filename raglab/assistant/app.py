"""The RAG system as an assistant people can talk to: an OpenAI-compatible chat endpoint and a chat page.

``python -m raglab.assistant [--rev EXPERIMENT]`` (``make assistant``) serves, on one FastAPI server
bound to 127.0.0.1 by default:

- ``POST /v1/chat/completions``: the last user message is routed (params ``rag.router``);
  a maths question goes to the generator directly with the distillation prompt (its reply starts
  with ``serve_infer.math.think_prefix``, as at eval), anything else through retrieval: the top
  ``rag.top_k`` passages of the knowledge base fill the training template. Earlier turns go to the
  generator as history (retrieval reads the last user turn only). The reply is an ordinary
  ``chat.completion`` (or, with ``stream: true``, ``chat.completion.chunk`` server-sent events) with real
  token counts, plus a ``raglab`` field with the route, the passages and the time each step took, so any
  OpenAI client works; errors in OpenAI's shape (``raglab.assistant.server``);
- ``/ui``: Gradio's chat interface showing the answer as it is written, the route taken and the retrieved
  passages.

``--api-key-env NAME`` requires the key in that environment variable on /v1 (and on the page); an address
other than loopback is refused without one unless ``--insecure``.

The models are the trained ones (``models/embedder``, ``models/llm-adapter``) of the workspace, of a
recorded run ``--rev NAME`` (``results/NAME``: its committed adapter, the base LLM from its packages, BM25
over the eval passages rebuilt from the mirror: ``raglab.assistant.records``), or of experiment ``--rev``
(copied out of DVC's cache into ``.cache/assistant/<commit>``); the base models when none was trained.
The generator is served with vLLM, as serve_infer serves it, for as long as the assistant runs. The
knowledge base is the eval split's passages (build_sft), and the embedding router the one serve_infer_rag
trained.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import click

from raglab.assistant.page import converse
from raglab.assistant.server import create_app, serve_in_thread
from raglab.assistant.system import start


def api_key_from(env: str | None) -> str | None:
    """The key in environment variable ``env`` (never a param or a command-line value: it would be in logs)."""
    if env is None:
        return None
    key = os.environ.get(env, "").strip()
    if not key:
        raise click.UsageError(f"--api-key-env {env}: the environment variable is not set or empty")
    return key


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without a key, unless told ``--insecure``."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and api_key is None and not insecure:
        raise click.UsageError(f"--host {host} serves the network: give an API key (--api-key-env NAME) or --insecure")


@click.command()
@click.option("--params", "params_file", default=None, help="Parameters (default: the experiment's, else params.yaml).")
@click.option("--rev", default=None, help="A recorded run (results/NAME with its adapter), an experiment (e.g. demo) "
              "or a git revision whose outputs to serve.")
@click.option("--host", default=None, help="Default: params assistant.host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: params assistant.port.")
@click.option("--api-key-env", default=None, metavar="NAME", help="Require the key in this environment variable as "
              "`Authorization: Bearer <key>` on /v1 (and on the page).")
@click.option("--insecure", is_flag=True, help="Allow an address other than loopback without an API key.")
@click.option("--ask", "questions", multiple=True, help="Ask this on the chat page (headless Chromium), print what "
              "it showed and stop (repeatable).")
@click.option("--screenshot", "png", type=click.Path(dir_okay=False, path_type=Path),
              help="With --ask: save a screenshot of the conversation.")
def main(params_file: str | None, rev: str | None, host: str | None, port: int | None, api_key_env: str | None,
         insecure: bool, questions: tuple[str, ...], png: Path | None) -> None:
    """Serve the RAG system: an OpenAI-compatible /v1/chat/completions and a chat page at /ui."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page's server
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    api_key = api_key_from(api_key_env)
    with ExitStack() as stack:
        if host:  # refused before any model loads
            check_exposure(host, api_key, insecure)
        assistant, params = start(params_file, rev, stack, Path(".cache/assistant/logs"))
        host, port = host or params.assistant.host, port or params.assistant.port
        check_exposure(host, api_key, insecure)
        if not questions:
            import uvicorn

            click.echo(f"assistant ready: chat page http://{host}:{port}/ui/ , OpenAI-compatible API "
                       f"http://{host}:{port}/v1")
            uvicorn.run(create_app(assistant, api_key), host=host, port=port, log_level="warning")
            return
        with serve_in_thread(create_app(assistant, api_key), host, port) as url:
            for question, seen in zip(questions, converse(f"{url}/ui/", list(questions), png)):
                click.echo(f"Q: {question}\n" + "\n".join(f"  | {m}" for m in seen.messages))
        if png:
            click.echo(f"wrote {png}")
