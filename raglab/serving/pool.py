"""vLLM servers that outlive the stage that started them (``serving.keep_alive_s`` > 0).

On a CPU each vLLM start costs tens of seconds to minutes, and the demo's stages serve the same tiny model again
and again (teacher, questions, base and SFT, maths, RAG, judge). With a keep-alive a stage asks the pool instead:

- a server is keyed by what it serves and how: the weights (``weights_identity``: two folders holding the same
  files are one) and the vLLM options, never the port, the served name or the adapters;
- the first stage to ask starts it under a *keeper* (``python -m raglab.serving.pool keep``, a session of its
  own), which records it in ``$RAGLAB_CACHE/servers/KEY.json`` and stops it once unheld for ``keep_alive_s``;
- a stage holds it with a shared lock on ``KEY.lease`` (released by the kernel if the stage dies), and touches
  the file when it lets go; a later stage with the same key reuses the server and loads its LoRA adapters at run
  time (``/v1/load_lora_adapter``), each named with the adapter's checksum.

It answers as the stage's own server would: same weights, dtype and options (the response cache keys name the
weights, not the server). ``python -m raglab.serving.pool stop`` stops those no stage holds; ``status`` lists them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from raglab.core.formats import folder_fingerprint, write_json
from raglab.core.machine import POOLED_CPU_LOG, cache_dir, process_cpu_seconds
from raglab.serving.vllm import (BASE_NAME, ServerError, VLLMServer, _signal_group, free_port, healthy, http_get,
                                 stop_group)

log = logging.getLogger("raglab")

POOL_MAX_LORA_RANK = 64  # pooled servers take adapters that arrive later: room for ranks up to this


def pool_dir() -> Path:
    return cache_dir() / "servers"


def lease_path(key: str) -> Path:
    """The lease file of server ``key``: stages hold a shared lock on it; its mtime is when the last let go."""
    return pool_dir() / f"{key}.lease"


def record_path(key: str) -> Path:
    """The record of server ``key`` (its keeper, host and port), written by the keeper once the server is healthy."""
    return pool_dir() / f"{key}.json"


def pool_key(server: VLLMServer, weights: str) -> str:
    """What a pooled server is: its weights and every vLLM option except the port, served name and adapters."""
    options = {k: v for k, v in vars(server).items()
               if not k.startswith("_") and k not in ("model", "served_name", "lora_modules", "max_lora_rank",
                                                       "port", "log_file", "startup_timeout_s")}
    return hashlib.sha256(json.dumps([weights, options], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _post(url: str, payload: dict, timeout: float = 120) -> None:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
    except urllib.error.HTTPError as e:
        raise ServerError(f"{url}: {e.code} {e.read().decode(errors='replace')[:500]}") from None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, a keeper that ended before its starter did, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_record(key: str) -> dict | None:
    """The pooled server ``key`` if its keeper is alive and the server healthy, else None."""
    path = record_path(key)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(record["keeper"]) or not healthy(record["host"], record["port"]):
        return None
    return record


def held(key: str, retire: Path | None = None) -> bool:
    """Whether a stage holds server ``key`` now (a shared lock on its lease). If not, ``retire`` (its record) is
    removed while the lease is held exclusively: a stage about to reuse it waits, finds no record, starts its own."""
    try:
        with open(lease_path(key), "a") as lease:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if retire is not None:
                retire.unlink(missing_ok=True)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


class PooledServer:
    """A ``VLLMServer`` from the pool: same use (``with``, ``base_url``), but leaving the block only lets go of it.

    ``model_name(name)`` is the name to ask for: the base model answers as ``base`` whatever name the stage asked
    for, an adapter of ``lora_modules`` under its name and checksum."""

    def __init__(self, server: VLLMServer, weights: str, keep_alive_s: float):
        self.server, self.keep_alive_s = server, keep_alive_s
        self.served_name = server.served_name
        self.key = pool_key(server, weights)
        self.adapters = {name: f"{name}-{folder_fingerprint(path)[:12]}" for name, path in server.lora_modules.items()}
        self.record: dict | None = None
        self._lease = None

    @property
    def base_url(self) -> str:
        return f"http://{self.record['host']}:{self.record['port']}/v1"

    @property
    def log_file(self) -> Path:
        return pool_dir() / f"{self.key}.log"

    def model_name(self, name: str) -> str:
        return self.adapters.get(name, BASE_NAME)

    def __enter__(self) -> PooledServer:
        folder = pool_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self._lease = open(lease_path(self.key), "a")
        fcntl.flock(self._lease, fcntl.LOCK_SH)  # held from now on, while the server starts too
        try:
            with open(folder / f"{self.key}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one starter per key; the others wait for its record
                self.record = read_record(self.key)
                if self.record is None:
                    self.record = self._start()
                else:
                    log.info("vLLM: reusing the pooled server %s at %s (%s)", self.key, self.base_url,
                             self.server.model)
            if self.server.log_file:  # it outlives the stage: its log is the pool's, not among the stage's outputs
                Path(self.server.log_file).parent.mkdir(parents=True, exist_ok=True)
                with open(self.server.log_file, "a") as note:
                    note.write(f"served by the pooled vLLM server {self.key}; its log: {self.log_file}\n")
            self._load_adapters()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lease is not None:
            os.utime(self._lease.name)  # the keep-alive counts from the moment the last holder let go
            self._lease.close()  # and its lock with it
            self._lease = None

    def _start(self) -> dict:
        lora = ["--enable-lora", "--max-lora-rank", str(max(POOL_MAX_LORA_RANK, self.server.max_lora_rank))]
        server = dataclasses.replace(self.server, served_name=BASE_NAME, lora_modules={},  # adapters: at run time
                                     extra_args=[*self.server.extra_args, *lora],
                                     port=self.server.port or free_port(self.server.host))
        record_file = record_path(self.key)
        record_file.unlink(missing_ok=True)
        spec = {"key": self.key, "command": server.command(), "host": server.host, "port": server.port,
                "keep_alive_s": self.keep_alive_s, "env": server.settings(), "model": str(server.model)}
        spec_file = pool_dir() / f"{self.key}.spec"
        write_json(spec_file, spec)
        log_file = self.log_file
        log.info("starting pooled vLLM %s (kept %gs after its last stage): %s", self.key, self.keep_alive_s,
                 " ".join(spec["command"]))
        with open(log_file, "ab") as out:
            keeper = subprocess.Popen([sys.executable, "-m", "raglab.serving.pool", "keep", str(spec_file)],
                                      stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        deadline = time.monotonic() + server.startup_timeout_s
        while time.monotonic() < deadline:
            if keeper.poll() is not None:
                raise ServerError(f"vLLM exited with code {keeper.returncode} while starting; see {log_file}")
            if (record := read_record(self.key)) is not None:
                log.info("vLLM healthy at http://%s:%s/v1", record["host"], record["port"])
                return record
            time.sleep(1)
        _signal_group(keeper.pid, signal.SIGTERM)
        raise ServerError(f"vLLM not healthy after {server.startup_timeout_s:.0f}s; see {log_file}")

    def _load_adapters(self) -> None:
        if not self.adapters:
            return
        listed = json.loads(http_get(f"{self.base_url}/models") or b'{"data": []}')
        loaded = {m["id"] for m in listed.get("data", [])}
        for name, served in self.adapters.items():
            if served not in loaded:
                log.info("vLLM: loading adapter %s as %s into the pooled server", self.server.lora_modules[name],
                         served)
                _post(f"{self.base_url}/load_lora_adapter",
                      {"lora_name": served, "lora_path": str(Path(self.server.lora_modules[name]).resolve())})


def keep(spec_file: Path) -> None:
    """The keeper: start the server of ``spec_file``, record it once healthy, stop it when unheld for the keep-alive
    (or when told to stop), and remove its record."""
    spec = json.loads(spec_file.read_text())
    key = spec["key"]
    record_file = record_path(key)
    env = {**os.environ, **spec["env"], "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    proc = subprocess.Popen(spec["command"], env=env, start_new_session=True)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    recorded = False
    try:
        while not stopping.wait(1):
            if proc.poll() is not None:
                print(f"pool: vLLM exited with code {proc.returncode}", flush=True)
                sys.exit(proc.returncode or 1)
            if not recorded:
                if healthy(spec["host"], spec["port"]):
                    write_json(record_file, {"key": key, "keeper": os.getpid(), "host": spec["host"],
                                             "port": spec["port"], "model": spec["model"]})
                    recorded = True
                continue
            with contextlib.suppress(OSError):
                idle = time.time() - lease_path(key).stat().st_mtime
                if idle > spec["keep_alive_s"] and not held(key, retire=record_file):
                    print(f"pool: unheld for {idle:.0f}s, stopping", flush=True)
                    break
    finally:
        record_file.unlink(missing_ok=True)
        stop_group(proc)
        with open(cache_dir() / POOLED_CPU_LOG, "a") as cpu_log:  # the stages' work: CoreSharing counts it as theirs
            cpu_log.write(f"{key} {process_cpu_seconds():.2f}\n")


def pooled() -> list[dict]:
    """The records of the pooled servers whose keepers are alive."""
    out = []
    for path in sorted(pool_dir().glob("*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            if _alive(record["keeper"]):
                out.append({**record, "held": held(record["key"])})
    return out


def stop_unheld(timeout_s: float = 30) -> int:
    """Stop every pooled server no stage holds; the number stopped."""
    stopping = [r for r in pooled() if not r["held"]]
    for record in stopping:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(record["keeper"], signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(r["keeper"]) for r in stopping):
        time.sleep(0.2)
    return len(stopping)


@click.group()
def cli() -> None:
    """vLLM servers kept between stages (serving.keep_alive_s)."""


@cli.command("keep")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def keep_command(spec_file: Path) -> None:
    """Run one pooled server (started by a stage, not by hand)."""
    keep(spec_file)


@cli.command()
def status() -> None:
    """List the pooled servers."""
    for r in pooled():
        click.echo(f"{r['key']}  http://{r['host']}:{r['port']}/v1  {'held' if r['held'] else 'idle'}  {r['model']}")


@cli.command()
def stop() -> None:
    """Stop every pooled server that no stage holds."""
    click.echo(f"stopped {stop_unheld()} pooled vLLM server(s)")


if __name__ == "__main__":
    cli()
