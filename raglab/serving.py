"""vLLM's OpenAI-compatible server as a managed subprocess.

``VLLMServer`` starts ``python -m vllm.entrypoints.openai.api_server`` on
127.0.0.1 and a free port, serving the base model (under the name ``base``) and
any LoRA adapters (``--enable-lora --lora-modules NAME=DIR``), waits for
``/health`` with a timeout, and always stops the whole process group on exit:
normal end, exception, Ctrl-C or SIGTERM. No orphan processes.
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

log = logging.getLogger("raglab")

BASE_NAME = "base"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    pass


@dataclass
class VLLMServer:
    model: str
    lora_modules: dict[str, str] = field(default_factory=dict)
    max_lora_rank: int = 8
    host: str = "127.0.0.1"
    port: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    cpu_kv_cache_gib: int = 1
    revision: str | None = None
    trust_remote_code: bool = False
    startup_timeout_s: float = 600
    log_file: str | os.PathLike | None = None
    extra_args: list[str] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _log = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        import torch

        gpu = torch.cuda.is_available()
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--served-model-name", BASE_NAME, "--host", self.host, "--port", str(self.port),
               "--dtype", "auto" if gpu else "float32", "--seed", "0"]
        if self.revision:
            cmd += ["--revision", self.revision]
        if self.trust_remote_code:
            cmd.append("--trust-remote-code")
        if gpu:
            cmd += ["--tensor-parallel-size", str(self.tensor_parallel_size),
                    "--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.lora_modules:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--lora-modules"]
            cmd += [f"{name}={path}" for name, path in self.lora_modules.items()]
        return cmd + list(self.extra_args)

    def start(self) -> VLLMServer:
        if self.port is None:
            self.port = free_port(self.host)
        env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": str(self.cpu_kv_cache_gib)}
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
        url = f"http://{self.host}:{self.port}/health"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerError(f"vLLM exited with code {self._proc.returncode} while starting; see {self.log_file}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        log.info("vLLM healthy at %s", self.base_url)
                        return
            time.sleep(1)
        raise ServerError(f"vLLM not healthy after {self.startup_timeout_s:.0f}s; see {self.log_file}")

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``grace_s``, wait until it is gone."""
        proc, self._proc = self._proc, None
        if proc is not None:
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
