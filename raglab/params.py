"""Read the experiment's parameters (``params.yaml``), the single source of every knob, checked.

``load_params`` validates the whole file against the declared schema (``raglab.schema``) before a
stage uses any of it. ``python -m raglab.params [--profile A,B] [-S group.key=value ...]`` checks
``params.yaml`` as it is, or with profiles and ``-S`` values laid over it (what ``raglab.profiles``
and the Makefile run before ``dvc exp run``), and prints one line per problem.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

import click
from ruamel.yaml import YAML, YAMLError

from .schema import ParamsError, validate

DEFAULT_PARAMS = "params.yaml"


def parse_yaml(text: Any) -> Any:
    """YAML 1.2, as DVC reads and writes params.yaml: ``5e-05`` (how DVC writes ``-S k=5.0e-5`` back)
    is a number, not the string PyYAML's YAML 1.1 makes of it."""
    return YAML(typ="safe", pure=True).load(text)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            params = parse_yaml(f) or {}
    except YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter groups")
    return params


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    return validate(read_yaml(path), str(path))


def section(params: dict[str, Any], name: str, path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    try:
        return params[name]
    except KeyError:
        raise ParamsError(f"{path}: missing parameter group '{name}'") from None


def set_value(params: dict[str, Any], assignment: str) -> dict[str, Any]:
    """``params`` with ``group.key=value`` applied (value parsed as YAML, as ``dvc exp run -S`` does)."""
    dotted, sep, raw = assignment.partition("=")
    if not sep:
        raise ParamsError(f"-S {assignment}: expected group.key=value")
    *parents, leaf = dotted.lstrip("+").split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node[leaf] = parse_yaml(raw)
    return params


def check(path: str | os.PathLike = DEFAULT_PARAMS, overlay: dict[str, Any] | None = None,
          assignments: tuple[str, ...] = (), source: str | None = None) -> dict[str, Any]:
    """params.yaml with an overlay (profiles) and ``-S`` assignments, validated. A sweep (``-S k=a,b``, DVC's
    Hydra syntax, as for ``dvc exp run --queue``) is validated at every point of its grid; the first is returned."""
    from dvc.utils.hydra import get_hydra_sweeps

    from .profiles import merge

    base = merge(read_yaml(path), overlay or {})
    points = get_hydra_sweeps({"params.yaml": list(assignments)}) if assignments else [{"params.yaml": []}]
    checked = []
    for point in points:
        params = copy.deepcopy(base)
        for assignment in point["params.yaml"]:
            params = set_value(params, assignment)
        checked.append(validate(params, source or str(path)))
    return checked[0]


@click.command()
@click.option("--params", "params_file", default=DEFAULT_PARAMS, show_default=True)
@click.option("--profile", default=None, help="Profiles laid over the file first (A or A,B).")
@click.option("-S", "--set-param", "assignments", multiple=True, help="group.key=value, as for dvc exp run.")
def main(params_file: str, profile: str | None, assignments: tuple[str, ...]) -> None:
    """Check params.yaml (with profiles and -S values) against the declared schema."""
    from .profiles import load_profiles

    source = params_file + (f" with profile {profile}" if profile else "")
    try:
        check(params_file, load_profiles(profile) if profile else None, assignments, source)
    except ParamsError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    click.echo(f"{source}: ok")


if __name__ == "__main__":
    main()
