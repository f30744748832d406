"""Records of runs: an experiment's params, dvc.lock, metrics and per-query scores committed under ``results/NAME``,
and ``results/metrics.json``, the baseline every record's metrics make together."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any, Callable

import click
import yaml

from raglab.core.formats import atomic_dir, write_json, write_text
from raglab.core.machine import describe_machine
from raglab.experiments.dvc import experiment_ref, git
from raglab.params.loader import DEFAULT_PARAMS, merge, read_yaml

log = logging.getLogger("raglab")

SCORES = "data/score"  # the per-query scores the score stages write
RECORDS = "results"     # committed records of runs (--record), and their metrics.json: the baseline
# Trained weights a record keeps, when the experiment has them and they are small enough for git: the LoRA
# adapter (the last 8 layers of Qwen 0.5B: a few MB), so that anyone can re-score or serve a recorded run.
WEIGHTS = {"models/llm-adapter": "llm-adapter"}
MAX_WEIGHTS_BYTES = 20 * 2**20
MACHINE = "machine.json"  # the machine a record's run used: its timings mean little without it
REPORTS = "reports"  # each stage's report.json (read, dropped, wrote), as reports/STAGE.json


def record_params(record: str | os.PathLike) -> dict[str, Any]:
    """A record's ``params.yaml`` laid over today's: a group or key added since the run takes today's default (it
    played no part in the recorded numbers), so an older record still loads in today's schema."""
    return merge(read_yaml(DEFAULT_PARAMS), read_yaml(Path(record) / "params.yaml"))


def record_machine(record: str | os.PathLike) -> dict[str, Any] | None:
    """A record's ``machine.json``: the machine its run used (``raglab.core.machine.describe_machine``, whether
    other jobs shared the cores, each stage's wall time) and where that is known from (``source``); None for a
    record without one."""
    path = Path(record) / MACHINE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def stage_machine(machine: dict[str, Any], stage: str) -> dict[str, Any]:
    """The machine a record's ``stage`` ran on: its own entry where the record was assembled from runs on other
    machines or sessions (e.g. training restored from DVC's run-cache), else the record's. Label a stage's timing
    with ``raglab.core.machine.machine_label`` of this."""
    return (machine.get("stages") or {}).get(stage, {}).get("machine") or machine


def run_stage(args: list[str], out: Path, what: str) -> None:
    """Run a pipeline stage script (``-m`` arguments ``args``) into ``out`` unless it is there: a record's missing
    pieces rebuilt by the pipeline's own code (an interrupted one starts again)."""
    if out.exists():
        return
    started = time.perf_counter()
    with atomic_dir(out) as partial:
        subprocess.run([sys.executable, "-m", *args, "--out", str(partial)], check=True)
    log.info("%s in %.0f s", what, time.perf_counter() - started)


def record_experiment(exp_name: str, out_dir: str | os.PathLike, sharing: dict[str, Any] | None = None) -> list[str]:
    """Copy ``params.yaml``, ``dvc.lock``, the metrics files and the per-query scores (into ``score/``) of
    experiment ``exp_name`` into ``out_dir``: a committed record of the run behind published numbers, readable with
    ``dvc metrics show``, while ``params.yaml`` keeps its reference defaults. ``machine.json`` says what ran it:
    this machine, each stage's wall time, and ``sharing`` (``raglab.core.machine.CoreSharing``'s result over the
    run; unknown without it)."""
    ref = experiment_ref(exp_name)
    dvc_yaml = yaml.safe_load(git("show", f"{ref}:dvc.yaml"))
    metrics = [m for m in dvc_yaml.get("metrics", []) if not m.startswith(f"{RECORDS}/")]  # the pipeline's
    files = ["params.yaml", "dvc.lock", *metrics]
    present = set(git("ls-tree", "-r", "--name-only", ref).split())
    for stale in ("metrics", "score", REPORTS, *WEIGHTS.values()):  # a record is one run's, nothing left from before
        shutil.rmtree(Path(out_dir) / stale, ignore_errors=True)
    for rel in files:
        if rel in present:
            write_text(Path(out_dir) / rel, git("show", f"{ref}:{rel}"))
    recorded = [f for f in files if f in present]
    # the per-query scores (DVC outputs, small): what `raglab.experiments.compare` pairs to put an interval on a delta
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(".", rev=ref)
    for path in sorted(fs.find(SCORES)) if fs.isdir(SCORES) else []:
        rel = path.lstrip("/").removeprefix(SCORES + "/")
        try:
            text = fs.read_text(path, encoding="utf-8")
        except FileNotFoundError:  # a part this experiment did not run, whose output is in no cache here
            click.echo(f"not recorded: {SCORES}/{rel} of {exp_name} is not in the DVC cache", err=True)
            continue
        write_text(Path(out_dir) / "score" / rel, text)
        recorded.append(f"score/{rel}")
    recorded += record_weights(fs, Path(out_dir), exp_name)
    lock = yaml.safe_load(git("show", f"{ref}:dvc.lock")) if "dvc.lock" in present else None
    read = cache(lambda path: _read(fs, path))  # the reports are read once, for themselves and for their seconds
    for stage, text in stage_reports(lock or {}, read).items():
        write_text(Path(out_dir) / REPORTS / f"{stage}.json", text)
        recorded.append(f"{REPORTS}/{stage}.json")
    write_json(Path(out_dir) / MACHINE, {
        "source": "measured", **describe_machine(), **(sharing or {"shared": None, "others_share": None}),
        "stages": stage_seconds(lock or {}, read)})
    recorded.append(MACHINE)
    write_baseline(Path(out_dir).parent)
    return recorded


def stage_reports(lock: dict[str, Any], read: Callable[[str], str | None]) -> dict[str, str]:
    """The ``report.json`` each stage of ``lock`` wrote in one of its outputs (``raglab.core.report.StageReport``:
    what it read, dropped and wrote, and its own figures), as text, for the stages that have one. A record keeps
    them (``reports/STAGE.json``) so that its counts are quoted from the record, as its metrics are."""
    reports = {}
    for name, stage in (lock.get("stages") or {}).items():
        for out in [o["path"] for o in stage.get("outs", [])]:
            text = read(f"{out}/report.json")
            if isinstance(_json(text), dict):
                reports[name] = text
                break
    return reports


def stage_seconds(lock: dict[str, Any], read: Callable[[str], str | None]) -> dict[str, dict[str, Any]]:
    """Each stage of ``lock`` (a ``dvc.lock``) with its wall time: the ``seconds`` of the ``report.json`` in one of
    its outputs (``raglab.core.report.StageReport``), else a trainer's ``train_runtime_s`` in its metrics file
    (training only), else None; ``from`` names the file. ``read(path)`` gives a file of the run or None. A stage DVC
    restored from its run-cache keeps the time of the run that made it, which may have been on another machine."""
    stages = {}
    for name, stage in (lock.get("stages") or {}).items():
        found: dict[str, Any] = {"seconds": None, "from": None}
        for out in [o["path"] for o in stage.get("outs", [])]:
            report, metrics = _json(read(f"{out}/report.json")), _json(read(out)) if out.endswith(".json") else None
            if isinstance(report, dict) and "seconds" in report:
                found = {"seconds": report["seconds"], "from": f"{out}/report.json"}
                break
            if isinstance(metrics, dict) and "train_runtime_s" in metrics:
                found = {"seconds": metrics["train_runtime_s"], "from": f"{out}: train_runtime_s (training only)"}
        stages[name] = found
    return stages


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _read(fs, path: str) -> str | None:
    """A file of the experiment (git or DVC's cache), or None where it is not there."""
    try:
        return fs.read_text(path, encoding="utf-8") if fs.isfile(path) else None
    except (OSError, UnicodeDecodeError):  # an output in no cache here
        return None


def record_weights(fs, out_dir: Path, exp_name: str) -> list[str]:
    """Copy the experiment's small trained weights (``WEIGHTS``, at most ``MAX_WEIGHTS_BYTES`` each) out of DVC's
    cache into the record, whole or not at all; say which were too large or not in the cache."""
    recorded = []
    for path, name in WEIGHTS.items():
        if not fs.isdir(path):
            continue
        try:
            size = sum(_size(fs, f) for f in fs.find(path))
        except FileNotFoundError:
            size = None
        if size is None or size > MAX_WEIGHTS_BYTES:
            why = "not in the DVC cache" if size is None else f"{size / 2**20:.1f} MB, over {MAX_WEIGHTS_BYTES >> 20} MB"
            click.echo(f"not recorded: {path} of {exp_name} ({why})", err=True)
            continue
        with atomic_dir(out_dir / name) as partial:
            fs.get(path, str(partial), recursive=True)
            (partial / "training_args.bin").unlink(missing_ok=True)  # the trainer's pickle: never loaded, not committed
        recorded.append(name)
    return recorded


def _size(fs, path: str) -> int:
    """A file's size; the files of a directory output have none in DVC's index until opened from the cache."""
    size = fs.size(path)
    if size is None:
        with fs.open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
    return size


def write_baseline(records: Path) -> dict[str, Any]:
    """``records/metrics.json``: every record's metrics files under its name, ``{run: {file stem: metrics}}``.
    One file with unique keys (``real-cpu-generator.generation.test.sft.em``), so that ``dvc metrics show``
    prints the baseline and ``dvc exp show`` columns stay apart from the pipeline's own metrics."""
    baseline = {
        run.name: {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in sorted((run / "metrics").glob("*.json"))}
        for run in sorted(records.iterdir()) if (run / "metrics").is_dir()
    }
    write_json(records / "metrics.json", baseline)
    return baseline
