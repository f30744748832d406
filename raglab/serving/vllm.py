"""vLLM's OpenAI-compatible server as a managed subprocess.

``VLLMServer`` starts ``python -m vllm.entrypoints.openai.api_server`` on
127.0.0.1 and a free port, serving a model (under the name ``base`` unless told
otherwise) and any LoRA adapters (``--enable-lora --lora-modules NAME=DIR``), waits
for ``/health`` with a timeout, and always stops the whole process group on exit:
normal end, exception, Ctrl-C or SIGTERM. No orphan processes.

Sampling is what the client asks for, nothing else: the server ignores the sampling
defaults a model's ``generation_config.json`` may carry (``--generation-config vllm``;
Qwen's, for one, sets a repetition penalty that would apply even to greedy requests).

``merge_adapter`` writes base + LoRA adapter as one plain model (peft's
``merge_and_unload``): vLLM's CPU build serves a merged model at the base model's
speed, while its LoRA path on a CPU is many times slower.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from raglab.core.machine import resolve_precision
from raglab.params.serving import Serving

log = logging.getLogger("raglab")

BASE_NAME = "base"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> bytes | None:
    """The body of a 200 answer to GET ``url`` within ``timeout`` seconds, else None (no server, or not yet)."""
    with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read() if r.status == 200 else None
    return None


def healthy(host: str, port: int, timeout: float = 5) -> bool:
    """Whether the vLLM server at ``host:port`` answers ``/health``."""
    return http_get(f"http://{host}:{port}/health", timeout) is not None


class ServerError(RuntimeError):
    pass


@dataclass
class VLLMServer:
    model: str
    served_name: str = BASE_NAME
    lora_modules: dict[str, str] = field(default_factory=dict)
    max_lora_rank: int = 8
    host: str = "127.0.0.1"
    port: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    cpu_kv_cache_gib: int = 1
    max_num_batched_tokens: int | None = None  # vLLM's token budget per engine step (None: vLLM's default)
    chunked_prefill: bool | None = None  # None: vLLM's default
    enforce_eager: bool = False  # no torch.compile: a quicker start, slower decoding
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: str = "auto"  # auto: the model's own dtype on a GPU; on a CPU bfloat16 with AMX / AVX512-BF16, else float32
    cpu_reserved_cores: int | None = None  # cores the CPU engine leaves to the API server (vLLM's default: 1)
    startup_timeout_s: float = 600
    log_file: str | os.PathLike | None = None
    extra_args: list[str] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _log = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def model_name(self, name: str) -> str:
        """The model name to ask for ``name`` (the served name or an adapter's): the name itself here; a pooled
        server (``raglab.serving.pool``) has its own."""
        return name

    def served_dtype(self) -> str:
        """The ``--dtype`` the server starts with: ``dtype``, with ``auto`` resolved on a CPU (bfloat16 with AMX /
        AVX512-BF16, else float32); on a GPU, auto is the model's own dtype (vLLM's choice)."""
        import torch

        if self.dtype != "auto" or torch.cuda.is_available():
            return self.dtype
        return {"bf16": "bfloat16", "fp32": "float32"}[resolve_precision("auto", "vLLM", gpu=False)]

    def command(self) -> list[str]:
        import torch

        gpu = torch.cuda.is_available()
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
               "--served-model-name", self.served_name, "--host", self.host, "--port", str(self.port),
               "--dtype", self.served_dtype(), "--seed", "0", "--generation-config", "vllm"]
        if self.revision:
            cmd += ["--revision", self.revision]
        if self.trust_remote_code:
            cmd.append("--trust-remote-code")
        if gpu:
            cmd += ["--tensor-parallel-size", str(self.tensor_parallel_size),
                    "--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.max_num_batched_tokens:
            cmd += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        if self.chunked_prefill is not None:
            cmd.append("--enable-chunked-prefill" if self.chunked_prefill else "--no-enable-chunked-prefill")
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.lora_modules:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--lora-modules"]
            cmd += [f"{name}={path}" for name, path in self.lora_modules.items()]
        return cmd + list(self.extra_args)

    def settings(self) -> dict[str, str]:
        """The environment variables the server starts with (beside this process's own)."""
        env = {"VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": str(self.cpu_kv_cache_gib)}
        if self.cpu_reserved_cores is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(self.cpu_reserved_cores)
        return env

    def start(self) -> VLLMServer:
        if self.port is None:
            self.port = free_port(self.host)
        env = {**os.environ, **self.settings()}
        if self.log_file:
            Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_file, "ab")
        else:
            self._log = subprocess.DEVNULL
        cmd = self.command()
        log.info("starting vLLM: %s", " ".join(cmd))
        # A session of its own: stop() signals the server and every worker it spawned.
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerError(f"vLLM exited with code {self._proc.returncode} while starting; see {self.log_file}")
            if healthy(self.host, self.port, timeout=2):
                log.info("vLLM healthy at %s", self.base_url)
                return
            time.sleep(1)
        raise ServerError(f"vLLM not healthy after {self.startup_timeout_s:.0f}s; see {self.log_file}")

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``grace_s``, wait until it is gone."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, grace_s)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServer:
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        self._previous_sigterm = previous
        try:
            return self.start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm)


def stop_group(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL what is left after ``grace_s``, wait until it is gone."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # Workers can outlive the parent; they still carry its process group id.
    if not _wait_group_gone(proc.pid, grace_s):
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        if not _wait_group_gone(proc.pid, grace_s):
            log.warning("vLLM process group %d still present after SIGKILL", proc.pid)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def adapter_rank(adapter_dir: str | os.PathLike) -> int:
    import json

    return int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"])


def merge_adapter(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  trust_remote_code: bool = False) -> Path:
    """Base + LoRA adapter merged into one float32 model in ``out_dir`` (with the adapter's tokenizer).

    float32, so that the adapter's small updates are not rounded away in a bf16 copy."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, trust_remote_code=trust_remote_code,
                                                use_safetensors=True)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=trust_remote_code).save_pretrained(out_dir)
    return Path(out_dir)


SFT_NAME = "sft"
ADAPTER_MODES = ("lora", "merged")


def server_for(model_dir: str | os.PathLike, serving: Serving, *, trust_remote_code: bool, log_file: str | os.PathLike,
               served_name: str = BASE_NAME, lora_modules: dict[str, str] | None = None) -> VLLMServer:
    """A VLLMServer configured from the ``serving`` parameter group."""
    lora_modules = lora_modules or {}
    return VLLMServer(
        str(model_dir), served_name=served_name, lora_modules=lora_modules,
        max_lora_rank=max([adapter_rank(d) for d in lora_modules.values()], default=8),
        trust_remote_code=trust_remote_code, dtype=serving.dtype, cpu_reserved_cores=serving.cpu_reserved_cores,
        tensor_parallel_size=serving.tensor_parallel_size, gpu_memory_utilization=serving.gpu_memory_utilization,
        max_model_len=serving.max_model_len, cpu_kv_cache_gib=serving.cpu_kv_cache_gib,
        max_num_batched_tokens=serving.max_num_batched_tokens, chunked_prefill=serving.chunked_prefill,
        enforce_eager=serving.enforce_eager, startup_timeout_s=serving.startup_timeout_s, log_file=log_file,
    )


def hf_generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int, batch_size: int = 8,
                continue_final_message: bool = False) -> list[str]:
    """Greedy replies with transformers' ``generate``, the reference the served model must agree with.

    Everything that could differ from the server is pinned: the model's own chat template, greedy
    decoding with no repetition penalty whatever ``generation_config.json`` says, stop at the
    end-of-turn token, special tokens dropped from the text."""
    import torch

    tokenizer.padding_side = "left"  # batched generation: the prompts end where the answers start
    replies = []
    for start in range(0, len(conversations), batch_size):
        batch = conversations[start:start + batch_size]
        enc = tokenizer.apply_chat_template(batch, add_generation_prompt=not continue_final_message,
                                            continue_final_message=continue_final_message, padding=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.0,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        replies += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return replies
