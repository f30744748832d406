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


def test_train_embed_runs_in_two_processes_and_the_first_writes_the_model(tmp_path, minilm_dir, params):
    """train_embed with ``num_processes: 2``: both processes train (the global batch of one process with twice the
    accumulation), the first clears checkpoints and writes the model while the other waits.

    Unlike train_llm, the two runs do not land on the same weights here: FlagEmbedding draws the rows of each
    process's batches in its own order, so the 8-row check differs from one process by about one update."""
    from raglab.params.loader import merge

    topics = ["revenue", "debt", "cash", "margin", "tax", "leases", "goodwill", "dividends"]
    write_jsonl(tmp_path / "train.jsonl", [
        {"query": f"What about {t}?", "pos": [f"The company reported {t} for the year."],
         "neg": [f"The company reported {topics[i - 1]} for the year."]} for i, t in enumerate(topics)])
    changes = {"embedder": {"model": minilm_dir, "revision": None, "pooling": "mean", "query_instruction": None},
               "train_embed": {"epochs": 2, "batch_size": 2, "gradient_accumulation_steps": 1, "train_group_size": 2,
                               "query_max_len": 16, "passage_max_len": 16, "mixed_precision": "fp32",
                               "length_buckets": 1, "merge_base_share": 0.0, "logging_steps": 1, "warmup_steps": 0,
                               "num_processes": 2}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(merge(params, changes), allow_unicode=True), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train_embed", "--params", str(params_file), "--train", str(tmp_path / "train.jsonl"),
         "--out", str(tmp_path / "model"), "--live", str(tmp_path / "live"), "--metrics", str(tmp_path / "m.json"),
         "--checkpoints", str(tmp_path / "ckpt")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == 4  # 8 rows, 2 per process, 2 epochs
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "model" / "modules.json").is_file()
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "model.partial").exists()
