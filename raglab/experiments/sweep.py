r"""Parameter sweeps as queued DVC experiments.

    python -m raglab.experiments.sweep demo -S 'train_embed.learning_rate=5e-5,2e-4' \
        -S 'build_embed_negatives.negatives=random,hard' score_retrieval

queues one experiment per point of the grid on top of a profile (``dvc exp run --queue -S k=a,b``, DVC's
Hydra sweep syntax; every point is validated first), runs the queue (``dvc queue start``), waits for it,
and prints ``dvc exp show`` with the swept parameters and the headline metrics only, so that it fits a
100-column terminal. Promote the winner with ``dvc exp apply NAME`` (workspace) or ``dvc exp branch NAME
BRANCH`` (a branch to open a pull request from).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from raglab.experiments.dvc import require_git_identity, run_dvc

# The first headline metric of each track, for its trained system (the untuned ones do not move in a sweep):
# DVC's column names are long, and more of them would not fit a 100-column terminal beside the swept keys.
TRACK_COLUMNS = {
    "retrieval": r"^test\.tuned\.context_recall$",
    "generation": r"^test\.sft\.em$",
    "math": r"^sft\.accuracy$",
}


def dvc(*args: str, check: bool = True) -> str:
    # dvc queue start spawns its worker through PATH: put this Python's scripts first; dvc exp show, whose
    # output is captured here, lays its table out for this terminal's width (100 columns if there is none)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "COLUMNS": str(shutil.get_terminal_size((100, 24)).columns)}
    return run_dvc(*args, env=env, check=check)


def swept_keys(assignments: tuple[str, ...]) -> list[str]:
    """The keys of the assignments that are sweeps (``k=a,b``, ``k=choice(a,b)``, ``k=range(...)``)."""
    from raglab.params.loader import sweep_points

    values: dict[str, set[str]] = {}
    for point in sweep_points(assignments):
        for assignment in point:
            key, _, value = assignment.partition("=")
            values.setdefault(key.lstrip("+"), set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1]


def experiments_named(prefix: str) -> list[str]:
    names = dvc("exp", "list", "--name-only").split()
    return [n for n in names if re.fullmatch(rf"{re.escape(prefix)}-\d+", n)]


def queue_states(prefix: str, status: str | None = None) -> dict[str, str]:
    """{experiment name: state} of the queue's entries named PREFIX-N (``dvc queue status``)."""
    states = {}
    for line in (status if status is not None else dvc("queue", "status")).splitlines()[1:]:
        fields = line.split()  # task, name, created (one or two words), status
        if len(fields) >= 3 and re.fullmatch(rf"{re.escape(prefix)}-\d+", fields[1]):
            states[fields[1]] = fields[-1]
    return states


def wait_for(prefix: str, names: list[str], poll_s: float, timeout_s: float) -> dict[str, str]:
    """Poll ``dvc queue status`` until none of ``names`` is queued or running; their final states."""
    deadline, idle_polls = time.monotonic() + timeout_s, 0
    while True:
        status = dvc("queue", "status")
        states = queue_states(prefix, status)
        if all(states.get(n) not in ("Queued", "Running") for n in names):
            return states
        idle_polls = idle_polls + 1 if "Worker status: 0 active, 0 idle" in status else 0
        if idle_polls >= 6:  # queued work and no worker for half a minute: it died
            raise click.ClickException(f"no queue worker is running, {states}: see .dvc/tmp/exps/celery/*.out")
        if time.monotonic() > deadline:
            raise click.ClickException(f"the sweep did not finish within {timeout_s:.0f} s: {states}")
        time.sleep(poll_s)


def show_command(keys: list[str], targets: tuple[str, ...]) -> list[str]:
    """``dvc exp show`` of the swept keys and the headline metric of each track the targets reach (all
    tracks without targets)."""
    tracks = [t for t in TRACK_COLUMNS if not targets or any(target.endswith(f"@{t}") for target in targets)]
    keep = "|".join(["^Experiment$", *(f"^{re.escape(k)}$" for k in keys), *(TRACK_COLUMNS[t] for t in tracks)])
    return ["exp", "show", "--no-pager", "--drop", ".*", "--keep", keep]


@click.command()
@click.argument("profile")
@click.option("-S", "--set-param", "assignments", multiple=True, required=True,
              help="group.key=a,b,... (repeat for a grid), as for dvc exp run --queue.")
@click.option("--name", default="sweep", show_default=True, help="Experiments are named NAME-1, NAME-2, ...")
@click.option("--jobs", default=1, show_default=True, help="Queue workers (each takes the machine's cores).")
@click.option("--timeout", "timeout_s", default=6 * 3600.0, show_default=True)
@click.argument("targets", nargs=-1)
def main(profile: str, assignments: tuple[str, ...], name: str, jobs: int, timeout_s: float,
         targets: tuple[str, ...]) -> None:
    """Queue the grid of -S sweeps on top of PROFILE (and dvc TARGETS, e.g. score_retrieval), run it, show it."""
    keys = swept_keys(assignments)
    if not keys:
        raise click.UsageError("no sweep among the -S values: give at least one as group.key=a,b")
    require_git_identity()
    old = experiments_named(name)
    if old:  # a new sweep of that name replaces the last one, and its entries in the queue's history
        dvc("exp", "remove", *old)
    previous = queue_states(name)
    if previous:
        dvc("queue", "remove", *previous, check=False)
    args = [a for assignment in assignments for a in ("-S", assignment)]
    proc = subprocess.run([sys.executable, "-m", "raglab.experiments.profiles", profile, "--name", name, "--queue",
                           *args, *targets], capture_output=True, text=True)
    if proc.returncode != 0:
        raise click.ClickException(f"queueing the sweep failed:\n{(proc.stdout + proc.stderr).strip()[-3000:]}")
    for line in proc.stdout.splitlines():  # not DVC's "Queueing with overrides" lines: every profile key
        if line.startswith("Queued experiment"):
            click.echo(line)
    names = sorted(queue_states(name))
    started = time.monotonic()
    dvc("queue", "start", "--jobs", str(jobs))
    states = wait_for(name, names, poll_s=5.0, timeout_s=timeout_s)
    click.echo(f"sweep {name}: {len(names)} experiments in {time.monotonic() - started:.0f} s: "
               + json.dumps(states))
    click.echo(dvc(*show_command(keys, targets)))
    failed = [n for n, state in states.items() if state != "Success"]
    if failed:
        raise click.ClickException(f"failed: {', '.join(failed)} (dvc queue logs NAME says why)")


if __name__ == "__main__":
    main()
