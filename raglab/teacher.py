"""The teacher model of distillation: an OpenAI-compatible endpoint, or a model this repo serves itself.

``distill_cot.teacher`` names either an ``endpoint`` (``base_url``, the ``model`` to ask, the name
of the environment variable with the API key) or a model that ``download@teacher`` materialised
in ``models/base/teacher``; the latter is served with the same vLLM lifecycle as serve_infer's
systems (``raglab.serving``). Either way the caller gets an ``Endpoint`` and a cache identity
that names what answers (the API's URL and model, or the served weights), never a port. A served
teacher starts only when a request is not in the response cache.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .client import Endpoint
from .formats import folder_fingerprint
from .models import MANIFEST
from .serving import VLLMServer, server_for


@contextlib.contextmanager
def teacher_endpoint(spec: dict, teacher_dir: str | os.PathLike, serving: dict,
                     log_dir: str | os.PathLike) -> Iterator[tuple[Endpoint | ServedEndpoint, str]]:
    """``(endpoint, identity)`` of the teacher; a served teacher runs until the block ends."""
    if spec.get("endpoint"):
        ep = spec["endpoint"]
        yield Endpoint(ep["base_url"], spec["model"], ep.get("api_key_env")), f"{ep['base_url']}|{spec['model']}"
        return
    with served_endpoint("teacher", teacher_dir, serving, spec["trust_remote_code"], log_dir) as served:
        yield served


@contextlib.contextmanager
def served_endpoint(name: str, model_dir: str | os.PathLike, serving: dict, trust_remote_code: bool,
                    log_dir: str | os.PathLike) -> Iterator[tuple[ServedEndpoint, str]]:
    """``(endpoint, identity)`` of ``model_dir`` served as ``name`` (the teacher, a judge): the server starts on
    the first request the response cache cannot answer and stops when the block ends; the identity names the
    weights and how they are served."""
    identity = json.dumps([name, folder_fingerprint(model_dir, skip=(MANIFEST,)), serving["dtype"]])
    server = server_for(model_dir, serving, trust_remote_code=trust_remote_code, served_name=name,
                        log_file=Path(log_dir) / f"vllm-{name}.log")
    endpoint = ServedEndpoint(server)
    try:
        yield endpoint, identity
    finally:
        endpoint.stop()


class ServedEndpoint:
    """An ``Endpoint`` (same attributes) whose server starts when a request first needs its URL: a run
    that the response cache answers entirely never starts it."""

    def __init__(self, server: VLLMServer):
        self.model, self.api_key_env = server.served_name, None
        self._server, self._started = server, False

    @property
    def base_url(self) -> str:
        if not self._started:
            self._server.__enter__()
            self._started = True
        return self._server.base_url

    def api_key(self) -> str:
        return "EMPTY"

    def stop(self) -> None:
        if self._started:
            self._server.__exit__(None, None, None)
            self._started = False
