"""Where the offline demo's time goes: run it N times from scratch and print each stage's wall time.

Each run is ``python -m raglab.experiments.runs demo -f`` (``make demo`` without its setup) with ``RAGLAB_CACHE``
a temporary folder whose response cache is emptied before each run: ``-f`` re-runs every stage instead of
restoring it from DVC's run cache, and no reply of the teacher (or any served model) is remembered, so each run
does all the work a first run does (the packaged models and vLLM's compile cache stay as ``make setup`` left
them). The output is read line by line as it arrives: a stage's time runs from DVC's ``Running stage`` line to the
next one (or the run's end), and the vLLM servers the stages start are counted with the seconds from ``starting
vLLM`` to ``vLLM healthy``. Prints one table of stages
(median over the runs), the servers, each run's total, the median, and the machine (CPU, cores, bf16 flags, and
whether other jobs shared the cores during the runs).

    make setup tiny-llm && .venv/bin/python benchmarks/demo_time.py --runs 3
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import click

from raglab.core.machine import CoreSharing, cache_dir, describe_machine, machine_label
from raglab.serving.cache import CACHE_FILE

STAGE = re.compile(r"Running stage '([^']+)'")
STARTING = re.compile(r"starting (pooled )?vLLM")
HEALTHY = re.compile(r"vLLM healthy at ")


def timed_run(cmd: list[str], echo: bool) -> tuple[float, dict[str, float], list[float]]:
    """Total seconds, seconds per stage, and seconds to healthy of each vLLM server started, of one run."""
    for stale in cache_dir().glob(f"{CACHE_FILE}*"):  # the cache and its -wal / -shm files: nothing remembered
        stale.unlink()
    began = time.perf_counter()
    stages: dict[str, float] = {}
    servers: list[float] = []
    current, stage_began, server_began = None, began, None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        now = time.perf_counter()
        if echo:
            sys.stdout.write(line)
        if m := STAGE.search(line):
            if current:
                stages[current] = now - stage_began
            current, stage_began = m.group(1), now
        elif STARTING.search(line):
            server_began = now
        elif HEALTHY.search(line) and server_began is not None:
            servers.append(now - server_began)
            server_began = None
    if proc.wait() != 0:
        raise click.ClickException(f"{' '.join(cmd)} exited with {proc.returncode}")
    end = time.perf_counter()
    if current:
        stages[current] = end - stage_began
    return end - began, stages, servers


@click.command()
@click.option("--runs", default=3, show_default=True, help="Runs of the whole demo; medians are over these.")
@click.option("--echo", is_flag=True, help="Print the demo's own output as it runs.")
def main(runs: int, echo: bool) -> None:
    cmd = [sys.executable, "-m", "raglab.experiments.runs", "demo", "-f"]
    totals, servers = [], []
    per_stage: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="demo-cache-") as cache:
        os.environ["RAGLAB_CACHE"] = cache  # the runs' cache, and CoreSharing's (the pooled servers' CPU time)
        with CoreSharing() as sharing:
            for run in range(1, runs + 1):
                total, stages, started = timed_run(cmd, echo)
                totals.append(total)
                servers.append(started)
                for name, seconds in stages.items():
                    per_stage[name].append(seconds)
                click.echo(f"run {run}: {total:6.1f} s, {len(stages)} stages, {len(started)} vLLM starts "
                           f"({sum(started):.1f} s to healthy)", err=True)
    click.echo(f"{'stage':32s} {'median s':>9s}  runs")
    for name, seconds in sorted(per_stage.items(), key=lambda kv: -statistics.median(kv[1])):
        click.echo(f"{name:32s} {statistics.median(seconds):9.1f}  {' '.join(f'{s:.1f}' for s in seconds)}")
    click.echo(f"vLLM starts per run: {', '.join(str(len(s)) for s in servers)}; seconds to healthy (median of "
               f"each run's sum): {statistics.median(sum(s) for s in servers):.1f}")
    click.echo(f"total per run: {', '.join(f'{t:.1f}' for t in totals)} s; median {statistics.median(totals):.1f} s "
               f"= {statistics.median(totals) / 60:.1f} min")
    click.echo(f"machine: {machine_label({**describe_machine(), **sharing.result})}")


if __name__ == "__main__":
    main()
