"""Kept-alive servers (serving.keep_alive_s, raglab/serving/pool.py) on a stand-in for vLLM's API server: started
once, reused by a later stage with its adapter loaded at run time, kept while held, stopped when unheld for the
keep-alive or by ``stop``, and their CPU time logged. tests/test_generation_vllm.py runs the same on vLLM itself."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from raglab.core.machine import POOLED_CPU_LOG
from raglab.serving import pool
from raglab.serving.systems import serve
from raglab.serving.vllm import VLLMServer, http_get

FAKE = Path(__file__).parent / "fake_vllm_server.py"


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(VLLMServer, "command", lambda self: [sys.executable, str(FAKE), "--port", str(self.port)])
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    yield model, adapter
    pool.stop_unheld()


def keeper_gone(record: dict, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not pool._alive(record["keeper"]):
            return True
        time.sleep(0.2)
    return False


def test_a_later_stage_reuses_the_server_and_loads_its_adapter_then_it_stops_unheld(fake_vllm, typed, tmp_path):
    model, adapter = fake_vllm
    serving = typed({"serving": {"keep_alive_s": 2}}).serving
    with serve(model, serving, trust_remote_code=False, served_name="teacher",
               log_file=tmp_path / "distill" / "vllm-teacher.log") as teacher:
        [record] = pool.pooled()
        assert record["held"] and teacher.model_name("teacher") == "base"
        assert pool.stop_unheld() == 0  # held: not stopped
    with serve(model, serving, trust_remote_code=False, lora_modules={"sft": str(adapter)},
               log_file=tmp_path / "serve" / "vllm.log") as sft:
        assert sft.base_url == teacher.base_url and [r["keeper"] for r in pool.pooled()] == [record["keeper"]]
        assert sft.model_name("sft").startswith("sft-") and sft.model_name("base") == "base"
        listed = json.loads(http_get(f"{sft.base_url}/models"))["data"]
        assert sft.model_name("sft") in {m["id"] for m in listed}  # loaded at run time
    assert "served by the pooled vLLM server" in (tmp_path / "serve" / "vllm.log").read_text()
    assert keeper_gone(record, within_s=15) and pool.pooled() == []  # unheld for 2 s: stopped
    [line] = (tmp_path / "cache" / POOLED_CPU_LOG).read_text().splitlines()
    assert line.split()[0] == record["key"] and float(line.split()[1]) >= 0


def test_stop_ends_an_idle_server_at_once_and_other_options_get_another_server(fake_vllm, typed, tmp_path):
    model, _ = fake_vllm
    kept = typed({"serving": {"keep_alive_s": 600}}).serving
    with serve(model, kept, trust_remote_code=False, log_file=tmp_path / "a.log"):
        pass
    with serve(model, typed({"serving": {"keep_alive_s": 600, "dtype": "float32"}}).serving,
               trust_remote_code=False, log_file=tmp_path / "b.log"):
        assert len(pool.pooled()) == 2
    records = pool.pooled()
    assert pool.stop_unheld() == 2 and all(keeper_gone(r, within_s=10) for r in records) and pool.pooled() == []
