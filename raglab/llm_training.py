"""LoRA supervised fine-tuning of the generator with trl's SFTTrainer and peft.

Records become conversational prompt-completion rows (system + user turn as the
prompt, the assistant answer as the completion). trl renders them with the base
model's own chat template and masks the prompt tokens, so the loss falls on the
answer (and its end-of-turn token) only. The chat is the one serve_infer sends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .prompts import chat_messages
from .report import StageReport, last_logged
from .training import live_callback, trainer_arguments

log = logging.getLogger("raglab")


def conversation(record: dict) -> dict:
    """Alpaca record -> trl conversational prompt-completion row."""
    user = record["instruction"] + (("\n" + record["input"]) if record.get("input") else "")
    return {"prompt": chat_messages(record.get("system"), user),
            "completion": [{"role": "assistant", "content": record["output"]}]}


def token_length(tokenizer, row: dict) -> int:
    return len(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=False))


def fit_cutoff(rows: list[dict], tokenizer, cutoff: int, overlong: str, report: StageReport, name: str) -> list[dict]:
    """Apply the cutoff length: ``drop`` overlong rows, or ``truncate`` them (trl keeps the start); counted."""
    if overlong not in {"drop", "truncate"}:
        raise ValueError(f"train_llm.overlong must be 'drop' or 'truncate', got {overlong!r}")
    lengths = [token_length(tokenizer, r) for r in rows]
    n_over = sum(n > cutoff for n in lengths)
    if overlong == "drop":
        report.drop(f"{name}_longer_than_cutoff", n_over)
        return [r for r, n in zip(rows, lengths) if n <= cutoff]
    report.extra[f"{name}_truncated_to_cutoff"] = n_over
    return rows


def run_fingerprint(hp: dict[str, Any], base: dict[str, Any], files: list[str]) -> str:
    """What a resumable checkpoint must match: hyper-parameters, base model and training data."""
    h = hashlib.sha256(json.dumps([hp, base], sort_keys=True, default=str).encode())
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def checkpoint_to_resume(checkpoint_dir: Path, fingerprint: str) -> bool:
    """True when ``checkpoint_dir`` holds checkpoints of this very run; otherwise clear it."""
    stamp = checkpoint_dir / "fingerprint"
    if stamp.is_file() and stamp.read_text() == fingerprint and any(checkpoint_dir.glob("checkpoint-*")):
        return True
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True)
    stamp.write_text(fingerprint)
    return False


def load_tokenizer(base: dict[str, Any]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base["model"], revision=base.get("revision"),
                                              trust_remote_code=base["trust_remote_code"])
    if tokenizer.chat_template is None:
        raise ValueError(f"{base['model']} has no chat template; the generator track trains and serves through one")
    return tokenizer


def load_base(base: dict[str, Any]):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        base["model"], revision=base.get("revision"), trust_remote_code=base["trust_remote_code"],
        dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32, use_safetensors=True,
    )
    return load_tokenizer(base), model


def train_lora(base: dict[str, Any], hp: dict[str, Any], train_rows: list[dict], val_rows: list[dict],
               output_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike, live_dir: str | os.PathLike,
               fingerprint: str, callbacks: list | None = None) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    gpu = torch.cuda.is_available()
    tokenizer, model = load_base(base)
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    resume = checkpoint_to_resume(checkpoint_dir, fingerprint)
    if resume:
        log.info("resuming from the last checkpoint in %s", checkpoint_dir)
    config = SFTConfig(
        output_dir=str(checkpoint_dir),
        **trainer_arguments(hp),
        per_device_eval_batch_size=hp["batch_size"],
        max_length=hp["cutoff_len"],
        completion_only_loss=True,
        bf16=gpu,
        eval_strategy="epoch" if val_rows else "no",
        save_strategy="steps",
        save_steps=hp["save_steps"],
        save_total_limit=2,
        dataloader_drop_last=False,
    )
    lora = LoraConfig(
        r=hp["lora_rank"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
        target_modules=hp["lora_target"], task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
        processing_class=tokenizer, peft_config=lora, callbacks=callbacks,
    )
    if trainer.is_world_process_zero():
        trainer.add_callback(live_callback(live_dir, resume=resume))
    trainer.train(resume_from_checkpoint=resume or None)
    partial = output_dir.with_name(output_dir.name + ".partial")
    if trainer.is_world_process_zero():
        shutil.rmtree(partial, ignore_errors=True)
        trainer.save_model(str(partial))  # the adapter (safetensors) with the tokenizer and its chat template
        tokenizer.save_pretrained(str(partial))
        shutil.rmtree(output_dir, ignore_errors=True)
        os.replace(partial, output_dir)
    history = trainer.state.log_history
    return {
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "steps": trainer.state.global_step,
        "train_loss": last_logged(history, "train_loss"),
        "eval_loss": last_logged(history, "eval_loss"),
        "train_runtime_s": last_logged(history, "train_runtime"),
    }
