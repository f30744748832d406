"""Named parameter profiles, run as DVC experiments.

A profile (``profiles/NAME.yaml``) is a partial copy of ``params.yaml``: the
keys it sets replace the defaults for one experiment, nothing else changes.
``python -m raglab.profiles NAME`` turns it into ``dvc exp run -n NAME -S
key=value ...``, so the defaults in ``params.yaml`` stay as they are and the
run is recorded (and comparable with ``dvc exp show`` / ``dvc metrics diff``)
like any other experiment. ``$VARS`` in string values are expanded from the
environment (e.g. a local model directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from .formats import write_json, write_text
from .params import check, parse_yaml

PROFILE_DIR = Path("profiles")
SCORES = "data/score"  # the per-query scores score writes
RECORDS = "results"     # committed records of runs (--record), and their metrics.json: the baseline


def load_profile(name: str, profile_dir: Path = PROFILE_DIR) -> dict[str, Any]:
    path = Path(name) if name.endswith((".yaml", ".yml")) else profile_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in profile_dir.glob("*.yaml"))
        raise click.BadParameter(f"no profile file {path} (known profiles: {known})")
    with open(path, encoding="utf-8") as f:
        overlay = parse_yaml(f) or {}
    if not isinstance(overlay, dict):
        raise click.BadParameter(f"{path}: a profile is a mapping shaped like params.yaml")
    return overlay


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` on top of ``base``, recursively (a later profile wins)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_profiles(names: str, profile_dir: Path = PROFILE_DIR) -> dict[str, Any]:
    """One or more comma-separated profiles, merged left to right."""
    overlay: dict[str, Any] = {}
    for name in names.split(","):
        overlay = merge(overlay, load_profile(name.strip(), profile_dir))
    return overlay


def _expand(value: Any, key: str) -> Any:
    if isinstance(value, str) and "$" in value:
        expanded = os.path.expandvars(value)
        if "$" in expanded:
            raise click.UsageError(f"profile value {key}={value!r} names an unset environment variable")
        return expanded
    return value


def flatten(overlay: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Leaf ``(dotted.key, value)`` pairs; lists are leaves."""
    pairs = []
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs += flatten(value, dotted + ".")
        else:
            pairs.append((dotted, _expand(value, dotted)))
    return pairs


def set_param_args(overlay: dict[str, Any]) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run``: scalars YAML-encoded, as DVC parses them; lists as
    JSON, whose quoted strings Hydra's override grammar (what parses ``-S``) takes as they are
    (an unquoted ``name==1.0`` inside a list is a syntax error there)."""
    args = []
    for key, value in flatten(overlay):
        if isinstance(value, (list, dict)):
            encoded = json.dumps(value, ensure_ascii=False)
        else:
            encoded = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**9)
            encoded = encoded.strip().removesuffix("...").strip()
        args += ["-S", f"{key}={encoded}"]
    return args


def dvc_executable() -> str:
    """The dvc installed with this Python (a venv's, even when it is not activated), else the one on PATH."""
    venv_dvc = Path(sys.executable).with_name("dvc")
    return str(venv_dvc) if venv_dvc.is_file() else "dvc"


def run_dvc(*args: str, cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> str:
    """``dvc ARGS``' standard output; a failure raises with the end of what it printed."""
    cmd = [dvc_executable(), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr).strip()[-3000:]}")
    return proc.stdout


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def experiment_ref(exp_name: str) -> str:
    """The git ref of experiment ``exp_name``: on top of HEAD if there is one, else the newest of that name
    (work may have been committed while a long experiment ran)."""
    head = _git("rev-parse", "HEAD").strip()
    ref = f"refs/exps/{head[:2]}/{head[2:]}/{exp_name}"  # where DVC keeps an experiment's commit
    if _git("for-each-ref", ref).strip():
        return ref
    refs = _git("for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps/").split()
    named = [r for r in refs if r.rsplit("/", 1)[-1] == exp_name]
    if not named:
        raise click.ClickException(f"no experiment '{exp_name}' (looked for {ref} and any refs/exps/*/{exp_name})")
    return named[0]


def experiment_files(rev: str, paths: dict[str, str], cache: Path) -> dict[str, Path]:
    """``paths`` (name -> path in the repository) of experiment or git revision ``rev`` that exist there, copied
    out of DVC's cache (outputs) or git into ``cache/<commit>`` (a re-run experiment of the same name is another
    commit); each copied whole or not at all, so an interrupted copy is started again."""
    from dvc.api import DVCFileSystem

    try:
        ref = experiment_ref(rev)
    except click.ClickException:
        ref = rev  # a branch, tag or commit
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True, text=True,
                            check=False)
    if commit.returncode != 0:
        raise click.ClickException(f"no experiment or git revision {rev!r}")
    dest = cache / commit.stdout.strip()
    fs, found = DVCFileSystem(".", rev=ref), {}
    for key, rel in paths.items():
        if not fs.exists(rel):
            continue
        target = dest / rel
        if not target.exists():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.unlink(missing_ok=True)
            fs.get(rel, str(partial), recursive=fs.isdir(rel))
            os.replace(partial, target)
        found[key] = target
    return found


def record_experiment(exp_name: str, out_dir: str | os.PathLike) -> list[str]:
    """Copy ``params.yaml``, ``dvc.lock``, the metrics files and the per-query scores (into ``score/``) of
    experiment ``exp_name`` into ``out_dir``: a committed record of the run behind published numbers, readable with
    ``dvc metrics show``, while ``params.yaml`` keeps its reference defaults."""
    ref = experiment_ref(exp_name)
    dvc_yaml = yaml.safe_load(_git("show", f"{ref}:dvc.yaml"))
    metrics = [m for m in dvc_yaml.get("metrics", []) if not m.startswith(f"{RECORDS}/")]  # the pipeline's
    files = ["params.yaml", "dvc.lock", *metrics]
    present = set(_git("ls-tree", "-r", "--name-only", ref).split())
    for stale in ("metrics", "score"):  # a record is one run's, nothing left from an earlier one
        shutil.rmtree(Path(out_dir) / stale, ignore_errors=True)
    for rel in files:
        if rel in present:
            write_text(Path(out_dir) / rel, _git("show", f"{ref}:{rel}"))
    recorded = [f for f in files if f in present]
    # the per-query scores (DVC outputs, small): what `raglab.compare` pairs to put an interval on a delta
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
    write_baseline(Path(out_dir).parent)
    return recorded


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


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("profile")  # NAME, a path, or NAME1,NAME2 (merged left to right)
@click.option("--name", "exp_name", help="Experiment name (default: the profile's name).")
@click.option("--temp", is_flag=True, help="Run in a temporary copy of the repo (workspace untouched).")
@click.option("--record", "record_dir", type=click.Path(file_okay=False),
              help="After the run, copy its params.yaml, dvc.lock, metrics and per-query scores into this folder.")
@click.option("--dry-run", is_flag=True, help="Print the dvc command instead of running it.")
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
def main(profile: str, exp_name: str | None, temp: bool, record_dir: str | None, dry_run: bool,
         dvc_args: tuple[str, ...]) -> None:
    """Run PROFILE (profiles/PROFILE.yaml; several: A,B) as `dvc exp run`; extra args go to dvc (e.g. -S k=v)."""
    from .schema import ParamsError

    exp_name = exp_name or "+".join(Path(p).stem for p in profile.split(","))
    overlay = load_profiles(profile)
    user_sets = tuple(a for flag, a in zip(dvc_args, dvc_args[1:]) if flag in ("-S", "--set-param"))
    try:  # before dvc runs anything: a typo must not cost a training run
        check("params.yaml", overlay, user_sets, f"params.yaml with profile {profile}")
    except ParamsError as e:
        raise click.ClickException(str(e)) from None
    cmd = [dvc_executable(), "exp", "run", "-n", exp_name]
    if temp:
        cmd.append("--temp")
    cmd += set_param_args(overlay) + list(dvc_args)
    if dry_run:
        click.echo(" ".join(cmd))
        return
    code = subprocess.call(cmd)
    if code == 0 and record_dir:
        files = record_experiment(exp_name, record_dir)
        click.echo(f"recorded {', '.join(files)} of experiment {exp_name} in {record_dir}")
    sys.exit(code)


if __name__ == "__main__":
    main()
