"""The systems under test as OpenAI-compatible endpoints, one home for how they are served and named.

``local_endpoints`` serves the base LLM (``base``) and base + LoRA adapter (``sft``) with vLLM, one at a
time or from one server; ``served_endpoint`` serves any model folder (the teacher, a judge) and starts it
only when the response cache cannot answer; ``systems_to_ask`` adds the hosted systems of the params. Each
server is the stage's own, or with ``serving.keep_alive_s`` one it shares with later stages (``serve``).
Every system comes with its cache identity: what answers (weights and how they are served, or an API's URL
and model), never a port. ``ask`` sends conversations to one of them through the response cache.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from raglab.core.formats import folder_fingerprint
from raglab.models.base import MANIFEST, base_folder_info
from raglab.params.schema import Params
from raglab.params.serving import External, Serving
from raglab.serving.cache import ResponseCache
from raglab.serving.client import chat_many, raise_failures
from raglab.serving.pool import PooledServer
from raglab.serving.types import Endpoint, Request, Sampling
from raglab.serving.vllm import ADAPTER_MODES, BASE_NAME, SFT_NAME, VLLMServer, merge_adapter, server_for

TEACHER = "teacher"  # a system name: distill_cot's teacher, asked as during distillation


def local_endpoints(systems: list[str], base_dir: str | os.PathLike, adapter_dir: str | os.PathLike | None,
                    serving: Serving, *, trust_remote_code: bool, log_dir: str | os.PathLike):
    """Yield ``(system, Endpoint)`` for the local systems ``base`` (the base model) and ``sft`` (base + the
    LoRA adapter), each while its server runs; every server is stopped before this returns.

    ``serving.adapter``: ``lora`` serves both from one server (vLLM's LoRA support: the GPU way);
    ``merged`` serves the base, then a peft-merged copy of base + adapter (the CPU way)."""
    if unknown := [s for s in systems if s not in (BASE_NAME, SFT_NAME)]:
        raise ValueError(f"unknown local systems {unknown} (known: {BASE_NAME}, {SFT_NAME})")
    mode = serving.adapter
    if mode not in ADAPTER_MODES:
        raise ValueError(f"serving.adapter must be one of {ADAPTER_MODES}, got {mode!r}")
    log_dir = Path(log_dir)
    if mode == "lora" or SFT_NAME not in systems:
        lora = {SFT_NAME: str(adapter_dir)} if SFT_NAME in systems else {}
        if systems:
            with serve(base_dir, serving, trust_remote_code=trust_remote_code, lora_modules=lora,
                       log_file=log_dir / "vllm.log") as server:
                for system in systems:
                    yield system, Endpoint(server.base_url, server.model_name(system))
        return
    import tempfile

    for system in systems:
        if system == BASE_NAME:
            with serve(base_dir, serving, trust_remote_code=trust_remote_code,
                       log_file=log_dir / "vllm-base.log") as server:
                yield system, Endpoint(server.base_url, server.model_name(BASE_NAME))
        else:
            with tempfile.TemporaryDirectory(prefix="merged-") as merged:
                merge_adapter(base_dir, adapter_dir, merged, trust_remote_code)
                with server_for(merged, serving, trust_remote_code=trust_remote_code, served_name=SFT_NAME,
                                log_file=log_dir / "vllm-sft.log") as server:
                    yield system, Endpoint(server.base_url, SFT_NAME)


def systems_to_ask(params: Params, systems: list[str], external: list[External], base_dir: str, adapter_dir: str,
                   log_dir: Path):
    """(name, endpoint, cache identity) for the local ``systems`` (servers running while used; the teacher is not
    one of them), then the ``external`` ones."""
    llm, serving = params.llm, params.serving
    local = [s for s in systems if s != TEACHER]
    weights = {"base": folder_fingerprint(base_dir, skip=(MANIFEST,))}
    if SFT_NAME in local:
        weights["sft"] = folder_fingerprint(adapter_dir)
    for system, endpoint in local_endpoints(local, base_dir, adapter_dir, serving,
                                            trust_remote_code=llm.trust_remote_code, log_dir=log_dir):
        # what answers: the weights (base, and the adapter for sft) and how they are served, not a port
        identity = json.dumps([system, weights["base"], weights.get(system if system == SFT_NAME else "", ""),
                               serving.adapter, serving.dtype])
        yield system, endpoint, identity
    for ext in external:
        endpoint = Endpoint(ext.base_url, ext.model, ext.api_key_env)
        yield ext.name, endpoint, endpoint.identity


def ask(endpoint: Endpoint, messages: list[list[dict]], sampling: Sampling, serving: Serving, cache: ResponseCache,
        identity: str, desc: str, *, keep_too_long: bool = False):
    """The replies, in order; raises if a request failed after retries. With ``keep_too_long``, a prompt the
    server refused as longer than its context comes back as an empty reply with ``too_long`` set, for the
    caller to count, instead of failing the batch."""
    replies = chat_many(endpoint, [Request(m) for m in messages], sampling, concurrency=serving.concurrency,
                        timeout_s=serving.timeout_s, max_retries=serving.max_retries, cache=cache,
                        identity=identity, desc=desc)
    raise_failures(replies, endpoint, tolerate_too_long=keep_too_long)
    return replies


@contextlib.contextmanager
def served_endpoint(name: str, model_dir: str | os.PathLike, serving: Serving, trust_remote_code: bool,
                    log_dir: str | os.PathLike) -> Iterator[tuple[ServedEndpoint, str]]:
    """``(endpoint, identity)`` of ``model_dir`` served as ``name`` (the teacher, a judge): the server starts on
    the first request the response cache cannot answer and stops when the block ends; the identity names the
    weights and how they are served."""
    identity = served_identity(name, model_dir, serving)
    server = serve(model_dir, serving, trust_remote_code=trust_remote_code, served_name=name,
                   log_file=Path(log_dir) / f"vllm-{name}.log")
    endpoint = ServedEndpoint(server)
    try:
        yield endpoint, identity
    finally:
        endpoint.stop()


def serve(model_dir: str | os.PathLike, serving: Serving, *, trust_remote_code: bool, log_file: str | os.PathLike,
          served_name: str = BASE_NAME, lora_modules: dict[str, str] | None = None) -> VLLMServer | PooledServer:
    """The server of ``model_dir`` (with ``lora_modules``) for a ``with`` block: a server of its own, or with
    ``serving.keep_alive_s`` a pooled one that other stages serving the same weights reuse."""
    server = server_for(model_dir, serving, trust_remote_code=trust_remote_code, log_file=log_file,
                        served_name=served_name, lora_modules=lora_modules)
    if serving.keep_alive_s:
        return PooledServer(server, weights_identity(model_dir), serving.keep_alive_s)
    return server


def served_identity(name: str, model_dir: str | os.PathLike, serving: Serving) -> str:
    """The cache identity of ``model_dir`` served as ``name``: its weights and the dtype asked for (``auto`` stays
    ``auto``, so replies are shared between machines that resolve it differently)."""
    return json.dumps([name, weights_identity(model_dir), serving.dtype])


def weights_identity(model_dir: str | os.PathLike) -> str:
    """What names a served model's weights in cache keys, the same on every machine: the checksum of the GGUF
    file it was dequantised from, or the hub id at its pinned revision; otherwise (a local folder, an
    unpinned hub id) a hash of the folder's files."""
    manifest = base_folder_info(model_dir)
    if manifest.get("kind") == "gguf-packages":
        return f"gguf:{manifest['sha256']}:{manifest['dtype']}"
    if manifest.get("kind") == "hub" and manifest.get("revision"):
        return f"hub:{manifest['model']}@{manifest['revision']}"
    return folder_fingerprint(model_dir, skip=(MANIFEST,))


class ServedEndpoint:
    """An ``Endpoint`` (same attributes) whose server starts when a request first needs its URL: a run
    that the response cache answers entirely never starts it."""

    def __init__(self, server: VLLMServer | PooledServer):
        self.model, self.api_key_env = server.model_name(server.served_name), None
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
