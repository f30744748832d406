"""LoRA supervised fine-tuning of the generator with trl's SFTTrainer and peft.

Records become conversational prompt-completion rows (system + user turn as the
prompt, the assistant answer as the completion). trl renders them with the base
model's own chat template and masks the prompt tokens, so the loss falls on the
answer (and its end-of-turn token) only. The chat is the one serve_infer sends.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from raglab.core.formats import atomic_dir
from raglab.core.prompts import chat_messages
from raglab.core.report import StageReport, last_logged
from raglab.models.trainer import (
    DataParallel,
    checkpoint_to_resume,
    last_checkpoint,
    live_callback,
    trainer_arguments,
    training_precision,
)
from raglab.params.pipeline import TrainLlm

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


def answer_only_trainer_class():
    """trl's SFTTrainer, with the LM head applied to the answer positions only on every device.

    With ``completion_only_loss`` only the answer tokens carry a loss, and trl's fused LM head
    projects just those positions on CUDA / XPU; elsewhere (a CPU) it projects every position of
    the prompt through the vocabulary-sized head and discards most of it, which for a 450-token
    CMRC prompt with a 5-token answer and Qwen's 151,936-word head is a third of a training step
    (``benchmarks/llm_train_step.py``). On a CPU this class asks the model for the logits of the
    answer positions only (``logits_to_keep``) and takes the same token-mean cross-entropy."""
    import torch
    from trl import SFTTrainer

    class AnswerOnlySFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if inputs["input_ids"].device.type in ("cuda", "xpu") or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"][:, 1:]  # position t predicts token t + 1
            keep = (labels != -100).any(dim=0).nonzero()[:, 0]  # positions with an answer token in any row
            forward = {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask")}
            logits = model(**forward, use_cache=False, logits_to_keep=keep).logits
            targets = labels[:, keep]
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                                     ignore_index=-100, reduction="sum")
            n_tokens = (targets != -100).sum() if num_items_in_batch is None else num_items_in_batch
            return loss / torch.as_tensor(n_tokens).clamp(min=1)

    return AnswerOnlySFTTrainer


def lora_config(model, hp: TrainLlm):
    """peft's LoraConfig from params. ``lora_layers: N`` puts the adapters on the last N decoder layers
    only: the backward pass then stops there, which on a CPU is most of the cost of a step."""
    import torch
    from peft import LoraConfig

    targets, layers = hp.lora_target, hp.lora_layers
    kwargs = {}
    if layers is not None:
        total = model.config.get_text_config().num_hidden_layers
        if not isinstance(layers, int) or not 1 <= layers <= total:
            raise ValueError(f"train_llm.lora_layers must be an integer in [1, {total}] (or null = all), got {layers!r}")
        if targets == "all-linear":  # peft takes a layer subset only with named targets: name the linear layers
            output = model.get_output_embeddings()
            targets = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                              if isinstance(m, torch.nn.Linear) and m is not output})
        kwargs["layers_to_transform"] = list(range(total - layers, total))
    return LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", **kwargs)


def train_lora(base: dict[str, Any], hp: TrainLlm, train_rows: list[dict], val_rows: list[dict],
               output_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike, live_dir: str | os.PathLike,
               fingerprint: str, callbacks: list | None = None) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig

    precision = training_precision(hp.mixed_precision, "train_llm")
    tokenizer, model = load_base(base)
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    procs = DataParallel()  # one of num_processes processes (torchrun), or the only one
    resume = procs.share(checkpoint_to_resume(checkpoint_dir, fingerprint) if procs.first else None)
    if resume:
        log.info("resuming from the last checkpoint in %s", checkpoint_dir)
    config = SFTConfig(
        output_dir=str(checkpoint_dir),
        **trainer_arguments(hp),
        per_device_eval_batch_size=hp.batch_size,
        max_length=hp.cutoff_len,
        completion_only_loss=True,  # trl then projects only the answer positions through the LM head
        gradient_checkpointing=hp.gradient_checkpointing,
        bf16=precision == "bf16",  # on a CPU: bfloat16 autocast (fast where AVX512-BF16 / AMX exist)
        fp16=precision == "fp16",
        eval_strategy="epoch" if val_rows else "no",
        save_strategy="steps",
        save_steps=hp.save_steps,
        save_total_limit=2,
        dataloader_drop_last=False,
    )
    lora = lora_config(model, hp)
    trainer = answer_only_trainer_class()(
        model=model, args=config, train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
        processing_class=tokenizer, peft_config=lora, callbacks=callbacks,
    )
    if trainer.is_world_process_zero():
        trainer.add_callback(live_callback(live_dir, resume=resume))
    trainer.train(resume_from_checkpoint=last_checkpoint(checkpoint_dir) if resume else None)
    if trainer.is_world_process_zero():
        with atomic_dir(output_dir) as partial:
            trainer.save_model(str(partial))  # the adapter (safetensors) with the tokenizer and its chat template
            tokenizer.save_pretrained(str(partial))
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    history = trainer.state.log_history
    return {
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "steps": trainer.state.global_step,
        "train_loss": last_logged(history, "train_loss"),
        "eval_loss": last_logged(history, "eval_loss"),
        "train_runtime_s": last_logged(history, "train_runtime"),
    }
