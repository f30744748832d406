"""Read the experiment's parameters (``params.yaml``), the single source of every knob."""

from __future__ import annotations

import os
from typing import Any

import yaml

DEFAULT_PARAMS = "params.yaml"


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of parameter groups")
    return params


def section(params: dict[str, Any], name: str, path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    try:
        return params[name]
    except KeyError:
        raise KeyError(f"{path}: missing parameter group '{name}'") from None
