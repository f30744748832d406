"""Interrupted training resumes: kill train_llm / train_embed (SIGKILL) after a checkpoint, re-run the same
command, and the result equals an uninterrupted run's (float32 weights within 1e-6, measured: equal)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raglab.core.formats import write_jsonl

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def write_params(tmp_path: Path, changes: dict) -> Path:
    from raglab.params.loader import merge

    params = merge(yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")), changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def kill_when(proc: subprocess.Popen, ready, timeout_s: float = 600) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (it must, before the process ends on its own)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def finish(args: list[str]) -> str:
    proc = start(args)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return err


def weights(folder: Path):
    from safetensors.torch import load_file

    return load_file(next(folder.glob("*.safetensors")))


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa), max(
        float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_train_embed_resumes_a_soup_killed_between_its_runs(tmp_path, minilm_dir):
    topics = ["revenue", "debt", "cash", "margin", "tax", "leases", "goodwill", "dividends"]
    train = tmp_path / "train.jsonl"
    write_jsonl(train, [{"query": f"What about {t}?", "pos": [f"The company reported {t} for the year."],
                         "neg": [f"The company reported {topics[i - 1]} for the year."]} for i, t in enumerate(topics)])
    params = write_params(tmp_path, {
        "embedder": {"model": minilm_dir, "revision": None, "pooling": "mean", "query_instruction": None},
        "train_embed": {"epochs": 2, "batch_size": 4, "train_group_size": 2, "query_max_len": 16,
                        "passage_max_len": 16, "mixed_precision": "fp32", "length_buckets": 1, "soup_size": 2,
                        "merge_base_share": 0.2, "save_steps": 1, "logging_steps": 1, "warmup_steps": 0}})

    def args(name: str) -> list[str]:
        return ["stages.train_embed", "--params", str(params), "--train", str(train), "--out", str(tmp_path / name),
                "--checkpoints", str(tmp_path / f"{name}-ckpt"), "--live", str(tmp_path / f"{name}-live"),
                "--metrics", str(tmp_path / f"{name}.json")]

    finish(args("whole"))
    kill_when(start(args("killed")), lambda: (tmp_path / "killed-ckpt" / "seed-1314" / "done.json").is_file())
    assert not (tmp_path / "killed").exists()  # nothing half-written where DVC looks
    log = finish(args("killed"))
    assert "run 1 of 2 (seed 1314) finished earlier: kept" in log
    assert_same_weights(tmp_path / "whole", tmp_path / "killed")
    assert json.loads((tmp_path / "killed.json").read_text())["steps"] == 8  # 2 runs x 2 epochs x 2 batches
    assert not (tmp_path / "killed-ckpt").exists()  # finished: the checkpoints are cleared

    kill_when(start(args("mid")), lambda: (tmp_path / "mid-ckpt" / "seed-1314" / "checkpoint-2").is_dir())
    log = finish(args("mid"))
    assert "resuming from" in log and "checkpoint-" in log
    assert_same_weights(tmp_path / "whole", tmp_path / "mid")


def test_train_llm_resumes_from_its_last_checkpoint(tmp_path, tiny_llm, mirror):
    import learnability

    sft = tmp_path / "sft.jsonl"
    exs = learnability.examples(mirror)
    params = write_params(tmp_path, {"train_llm": {
        "mixture": {"cmrc": None, "math": 0, "math_answer_only": 0}, "epochs": 30, "batch_size": 2,
        "learning_rate": 1.0e-3, "cutoff_len": 1024, "mixed_precision": "fp32", "gradient_checkpointing": False,
        "save_steps": 2, "logging_steps": 1, "lr_scheduler": "linear"}})
    prompt = yaml.safe_load(params.read_text())["prompt"]
    from raglab.generator.sft import alpaca_record

    write_jsonl(sft, [alpaca_record(e, prompt["template"], prompt["system"]) for e in exs])
    write_jsonl(tmp_path / "val.jsonl", [])

    def args(name: str) -> list[str]:
        return ["stages.train_llm", "--params", str(params), "--base", tiny_llm, "--source", f"cmrc={sft}",
                "--val", str(tmp_path / "val.jsonl"), "--out", str(tmp_path / name), "--checkpoints",
                str(tmp_path / f"{name}-ckpt"), "--live", str(tmp_path / f"{name}-live"),
                "--metrics", str(tmp_path / f"{name}.json")]

    finish(args("whole"))
    kill_when(start(args("killed")), lambda: (tmp_path / "killed-ckpt" / "checkpoint-4").is_dir())
    log = finish(args("killed"))
    assert "resuming from the last checkpoint" in log
    assert_same_weights(tmp_path / "whole", tmp_path / "killed")
    assert json.loads((tmp_path / "killed.json").read_text())["steps"] == 120  # 30 epochs x 4 batches
