"""Read the experiment's parameters (``params.yaml``), the single source of every knob, checked.

``load_params`` validates the whole file against the declared schema (``raglab.params.schema``) before a
stage uses any of it, and returns it as typed groups (``params.train_llm.learning_rate``): no stage looks a
knob up by a string. ``python -m raglab.params.loader [--profile A,B] [-S group.key=value ...]`` checks
``params.yaml`` as it is, or with profiles and ``-S`` values laid over it (what ``raglab.experiments.profiles``
and the Makefile run before ``dvc exp run``), and prints one line per problem.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import click
from ruamel.yaml import YAML, YAMLError

from raglab.params.schema import Params, ParamsError, validate

DEFAULT_PARAMS = "params.yaml"
PROFILE_DIR = Path("profiles")  # profiles: partial copies of params.yaml, laid over it left to right


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


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> Params:
    """``params.yaml`` read once and checked: the typed groups every stage reads (``params.train_llm.epochs``)."""
    return validate(read_yaml(path), str(path))


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


def set_value(params: dict[str, Any], assignment: str) -> dict[str, Any]:
    """``params`` with ``group.key=value`` applied, the value parsed by Hydra's override grammar as ``dvc exp run
    -S`` applies it (a sweep point comes back escaped: ``http\\://host``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        (override,) = OverridesParser.create().parse_overrides([assignment])
    except OverrideParseException as e:
        raise ParamsError(f"-S {assignment}: {e}") from None
    *parents, leaf = override.key_or_group.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node[leaf] = override.value()
    return params


def sweep_points(assignments: tuple[str, ...] | list[str]) -> list[list[str]]:
    """The ``-S`` assignments of each point of a sweep (``-S k=a,b``, DVC's Hydra syntax, as for ``dvc exp run
    --queue``); one point when nothing is swept."""
    if not assignments:
        return [[]]
    from dvc.utils.hydra import get_hydra_sweeps

    return [point["params.yaml"] for point in get_hydra_sweeps({"params.yaml": list(assignments)})]


def assign(params: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """A copy of ``params`` with one point's ``-S`` assignments applied."""
    params = copy.deepcopy(params)
    for assignment in assignments:
        params = set_value(params, assignment)
    return params


def check(path: str | os.PathLike = DEFAULT_PARAMS, overlay: dict[str, Any] | None = None,
          assignments: tuple[str, ...] = (), source: str | None = None) -> Params:
    """params.yaml with an overlay (profiles) and ``-S`` assignments, validated. A sweep is validated at every
    point of its grid; the first is returned."""
    base = merge(read_yaml(path), overlay or {})
    checked = [validate(assign(base, point), source or str(path)) for point in sweep_points(assignments)]
    return checked[0]


@click.command()
@click.option("--params", "params_file", default=DEFAULT_PARAMS, show_default=True)
@click.option("--profile", default=None, help="Profiles laid over the file first (A or A,B).")
@click.option("-S", "--set-param", "assignments", multiple=True, help="group.key=value, as for dvc exp run.")
def main(params_file: str, profile: str | None, assignments: tuple[str, ...]) -> None:
    """Check params.yaml (with profiles and -S values) against the declared schema."""

    source = params_file + (f" with profile {profile}" if profile else "")
    try:
        check(params_file, load_profiles(profile) if profile else None, assignments, source)
    except ParamsError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    click.echo(f"{source}: ok")


if __name__ == "__main__":
    main()
