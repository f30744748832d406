from pathlib import Path

import click
import pytest

from raglab.profiles import flatten, set_param_args
from synthetic import mirror_files

REPO = Path(__file__).resolve().parents[1]


def test_flatten_and_dvc_set_param_args(monkeypatch):
    monkeypatch.setenv("MODEL_DIR", "/models/minilm")
    overlay = {"a": {"b": 1, "c": [3, 30], "d": None, "e": "$MODEL_DIR", "f": "fp32"}, "g": "x y: z"}
    assert flatten(overlay) == [("a.b", 1), ("a.c", [3, 30]), ("a.d", None), ("a.e", "/models/minilm"),
                                ("a.f", "fp32"), ("g", "x y: z")]
    assert set_param_args(overlay) == ["-S", "a.b=1", "-S", "a.c=[3, 30]", "-S", "a.d=null",
                                       "-S", "a.e=/models/minilm", "-S", "a.f=fp32", "-S", "g='x y: z'"]


def test_unset_variable_is_an_error(monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(click.UsageError, match="unset environment variable"):
        flatten({"embedder": {"model": "$NOPE_NOT_SET"}})


def test_profiles_only_set_keys_that_params_yaml_has():
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for path in (REPO / "profiles").glob("*.yaml"):
        overlay = yaml.safe_load(path.read_text())

        def walk(o, p, where):
            for k, v in o.items():
                assert k in p, f"{path.name}: {where}{k} is not a parameter in params.yaml"
                if isinstance(v, dict):
                    walk(v, p[k], f"{where}{k}.")

        walk(overlay, params, "")


def test_committed_demo_mirror_is_what_the_generator_writes():
    for rel, text in mirror_files().items():
        assert (REPO / "data" / "demo-mirror" / rel).read_text(encoding="utf-8") == text, rel
