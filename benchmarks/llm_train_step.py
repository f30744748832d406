"""Seconds per training record of train_llm's LoRA SFT on CPU, for the choices that set its speed.

Trains --records CMRC records (real passages from a mirror's cmrc2018 file, the brief's template)
for one epoch with `raglab.generator.train.train_lora` and the cpu-qwen profile's settings, once per
variant: trl's own SFTTrainer (every prompt position through the LM head) vs train_llm's answer-only
loss; LoRA on all layers vs the last 8; batch 1 vs 4; fp32 vs bf16 autocast. Prints the trainer's
runtime per record (the first step included) and the training loss (equal where only speed differs).

    HF_HUB_OFFLINE=1 python benchmarks/llm_train_step.py --model models/base/llm \
        --cmrc ../shared/datasets/cmrc2018/cmrc2018_dev.json
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import click
import yaml

REPO = Path(__file__).resolve().parents[1]
FP32 = {"mixed_precision": "fp32"}
VARIANTS = {  # name -> (changes to the profile's train_llm, use trl's SFTTrainer as it is)
    "trl SFTTrainer, all layers": ({"lora_layers": None, **FP32}, True),
    "answer-only loss, all layers": ({"lora_layers": None, **FP32}, False),
    "answer-only loss, last 8 layers": ({"lora_layers": 8, **FP32}, False),
    "answer-only loss, last 8 layers, batch 4": ({"lora_layers": 8, "batch_size": 4,
                                                  "gradient_accumulation_steps": 2, **FP32}, False),
    "answer-only loss, last 8 layers, bf16 autocast": ({"lora_layers": 8, "mixed_precision": "bf16"}, False),
}


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--cmrc", "cmrc_file", required=True, type=click.Path(dir_okay=False, exists=True),
              help="A CMRC 2018 file in the upstream format (SQuAD-style JSON).")
@click.option("--records", default=16, show_default=True)
@click.option("--variant", "only", multiple=True, help="Run only these variants (default: all).")
def main(model_dir: str, cmrc_file: str, records: int, only: tuple[str, ...]) -> None:
    import torch
    from trl import SFTTrainer

    from raglab.core.machine import bf16_flags
    from raglab.generator import train as llm_training
    from raglab.generator.sft import alpaca_record, validate_rc
    from raglab.generator.train import conversation, train_lora
    from raglab.params.loader import merge
    from raglab.params.pipeline import TrainLlm

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    profile = yaml.safe_load((REPO / "profiles" / "cpu-qwen.yaml").read_text(encoding="utf-8"))
    doc = json.loads(Path(cmrc_file).read_text(encoding="utf-8"))
    rows = [{"id": q["id"], "context": p["context"], "question": q["question"], "answers": [a["text"] for a in q["answers"]]}
            for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    random.Random(0).shuffle(rows)
    from raglab.core.report import StageReport

    prompt = params["prompt"]
    data = [conversation(alpaca_record(e, prompt["template"], prompt["system"]))
            for e in validate_rc(rows[:records], StageReport("bench"))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(data)} records, "
          f"CPU bf16 flags: {', '.join(bf16_flags()) or 'none'}")
    own = llm_training.answer_only_trainer_class
    base = {"model": model_dir, "revision": None, "trust_remote_code": False}
    for name, (changes, plain_trl) in VARIANTS.items():
        if only and name not in only:
            continue
        hp = TrainLlm.model_validate(merge(params["train_llm"], {**profile["train_llm"], "epochs": 1, "logging_steps": 1,
                                                                 "save_steps": 10**6, "warmup_steps": 0, **changes}))
        llm_training.answer_only_trainer_class = (lambda: SFTTrainer) if plain_trl else own
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = train_lora(base, hp, data, [], Path(tmp) / "a", Path(tmp) / "c", Path(tmp) / "l", f"bench{t0}")
        print(f"{name:48s} {summary['train_runtime_s'] / len(data):5.2f} s/record  "
              f"train loss {summary['train_loss']:.4f}", flush=True)
    llm_training.answer_only_trainer_class = own


if __name__ == "__main__":
    main()
