"""Data-parallel training runs: train_llm with ``num_processes: 2`` (torchrun, gloo on the CPU) trains the same
adapter as one process with twice the gradient accumulation (the same global batch and optimizer steps).

Measured on the tiny model (2 CPU cores): 8 records, 4 epochs, 8 steps; final training loss 9.1555 (one process)
vs 9.1625 (two), eval loss 7.6524 vs 7.6321. Each process averages its own tokens, so records of different
lengths weigh a little differently than in one process: the tolerance is 2 %."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from raglab.core.formats import write_jsonl

pytestmark = pytest.mark.slow


def test_two_processes_train_like_one_with_twice_the_accumulation(tmp_path, tiny_llm, mirror, params):
    import learnability

    from raglab.generator.sft import alpaca_record
    from raglab.params.loader import merge

    records = [alpaca_record(e, params["prompt"]["template"], params["prompt"]["system"])
               for e in learnability.examples(mirror)]
    write_jsonl(tmp_path / "sft.jsonl", records)
    write_jsonl(tmp_path / "val.jsonl", records)
    results = {}
    for processes, accumulation in [(1, 4), (2, 2)]:
        changes = {"train_llm": {
            "mixture": {"cmrc": None, "math": 0, "math_answer_only": 0}, "epochs": 4, "batch_size": 1,
            "num_processes": processes, "gradient_accumulation_steps": accumulation, "learning_rate": 1.0e-3,
            "lr_scheduler": "constant", "warmup_steps": 0, "cutoff_len": 1024, "mixed_precision": "fp32",
            "gradient_checkpointing": False, "save_steps": 1000, "logging_steps": 1, "max_val_records": None}}
        params_file = tmp_path / f"params-{processes}.yaml"
        params_file.write_text(yaml.safe_dump(merge(params, changes), allow_unicode=True), encoding="utf-8")
        name = f"p{processes}"
        proc = subprocess.run(
            [sys.executable, "-m", "stages.train_llm", "--params", str(params_file), "--base", tiny_llm,
             "--source", f"cmrc={tmp_path / 'sft.jsonl'}", "--val", str(tmp_path / "val.jsonl"),
             "--out", str(tmp_path / name), "--checkpoints", str(tmp_path / f"{name}-ckpt"),
             "--live", str(tmp_path / f"{name}-live"), "--metrics", str(tmp_path / f"{name}.json")],
            capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[processes] = json.loads((tmp_path / f"{name}.json").read_text())
        assert (tmp_path / name / "adapter_model.safetensors").is_file()
    one, two = results[1], results[2]
    assert one["steps"] == two["steps"] == 8  # the same global batch: 8 records, 4 a step, 4 epochs
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.02)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=0.02)
