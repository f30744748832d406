"""The named experiments of ``experiments.yaml``, run as DVC experiments.

``python -m raglab.experiments.runs NAME [dvc exp run args]`` (``make NAME``) removes the previous experiment of
that name, runs ``dvc exp run --temp -n NAME`` with the experiment's profiles, ``set`` values and targets
(``raglab.experiments.profiles``), records it in ``results/NAME`` when asked, and prints its metrics: the
record's, or the chosen ``columns`` of ``dvc exp show``. Variants run one experiment each (``NAME-VARIANT``);
a group (``runs``) runs its experiments in turn. ``--dry-run`` prints the commands instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
from pydantic import BaseModel, ConfigDict, ValidationError

from raglab.experiments.dvc import dvc_executable, require_git_identity
from raglab.experiments.records import RECORDS
from raglab.params.loader import read_yaml

EXPERIMENTS_FILE = Path("experiments.yaml")
# The shared mirror holds CMRC 2018 validation (and trial_a) and GSM8K train only: the other splits are not asked
# for. An experiment's own `set` comes after these, so it can ask for trial_a.
MIRROR_SET = ("download.datasets.cmrc2018.splits=[validation]", "download.datasets.gsm8k.splits=[train]")
CHOSEN = "chosen"


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profiles: list[str] = []
    targets: list[str] = []
    set: list[str] = []
    mirror: bool = False
    record: bool = False
    columns: list[str] = []
    variants: dict[str, str | list[str]] | None = None  # from: a folder of profiles; NAME: that variant's -S
    runs: list[str] = []


def load_experiments(path: Path = EXPERIMENTS_FILE) -> dict[str, Experiment]:
    raw = read_yaml(path)
    try:
        return {name: Experiment.model_validate(spec or {}) for name, spec in raw.items()}
    except ValidationError as e:
        raise click.ClickException(f"{path}: {e}") from None


def variants(exp: Experiment) -> list[tuple[str, list[str], list[str]]]:
    """``(variant, extra profiles, extra -S)`` for each variant, ``chosen`` (the experiment as declared) first."""
    out = [(CHOSEN, [], [])]
    for key, value in (exp.variants or {}).items():
        if key == "from":
            out += [(p.stem, [str(p)], []) for p in sorted(Path(str(value)).glob("*.yaml"))]
        else:
            out.append((key, [], [value] if isinstance(value, str) else list(value)))
    return out


def commands(name: str, exp: Experiment, extra: tuple[str, ...] = (), mirror: str | None = None) -> list[list[str]]:
    """The ``raglab.experiments.profiles`` command of each run of experiment ``name``."""
    runs = variants(exp) if exp.variants else [(None, [], [])]
    mirror = os.path.abspath(mirror or os.environ.get("MIRROR") or "../shared/datasets")
    cmds = []
    for variant, more_profiles, more_sets in runs:
        run_name = f"{name}-{variant}" if variant else name
        sets = [*((f"download.mirror={mirror}", *MIRROR_SET) if exp.mirror else ()), *exp.set, *more_sets]
        sets = [s.replace("$MIRROR", mirror) for s in sets]  # a file of the mirror (own documents)
        cmd = [sys.executable, "-m", "raglab.experiments.profiles", ",".join(exp.profiles + more_profiles),
               "--name", run_name, "--temp"]
        if exp.record:
            cmd += ["--record", f"{RECORDS}/{run_name}"]
        for assignment in sets:
            cmd += ["-S", assignment]
        cmds.append(cmd + exp.targets + list(extra))
    return cmds


def show(name: str, exp: Experiment) -> list[str]:
    """The command that prints what the experiment measured."""
    if exp.record and not exp.variants:
        return [dvc_executable(), "metrics", "show", "--md", "-R", f"{RECORDS}/{name}/metrics"]
    columns = "|".join(f"^{c}$" for c in exp.columns or ["Experiment"])
    return [dvc_executable(), "exp", "show", "--no-pager", "--md", "--drop", ".*", "--keep", columns]


def run_experiment(name: str, experiments: dict[str, Experiment], extra: tuple[str, ...], dry_run: bool) -> None:
    if name not in experiments:
        raise click.ClickException(f"no experiment {name!r} in {EXPERIMENTS_FILE} (known: {', '.join(experiments)})")
    exp = experiments[name]
    for member in exp.runs:
        run_experiment(member, experiments, extra, dry_run)
    if exp.runs:
        return
    for cmd in commands(name, exp, extra):
        run_name = cmd[cmd.index("--name") + 1]
        if dry_run:
            click.echo(" ".join(cmd))
            continue
        subprocess.run([dvc_executable(), "exp", "remove", run_name], capture_output=True, check=False)
        if subprocess.call(cmd) != 0:
            raise click.ClickException(f"experiment {run_name} failed")
    if not dry_run:
        subprocess.call(show(name, exp))


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Print the commands instead of running them.")
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
def main(name: str, dry_run: bool, dvc_args: tuple[str, ...]) -> None:
    """Run experiment NAME of experiments.yaml; extra arguments go to dvc exp run (e.g. -S k=v)."""
    if not dry_run:
        require_git_identity()
    run_experiment(name, load_experiments(), dvc_args, dry_run)


if __name__ == "__main__":
    main()
