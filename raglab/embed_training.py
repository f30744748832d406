"""Contrastive fine-tuning of the embedder with FlagEmbedding's encoder-only trainer.

The trainer is FlagEmbedding's own (``EncoderOnlyEmbedderRunner``: InfoNCE over
the positive, the row's sampled negatives and in-batch negatives, with a
temperature). This module only maps parameters onto its argument dataclasses,
attaches DVCLive for the training curves, and makes the saved model loadable by
sentence-transformers as well (pooling and normalisation written as modules).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .report import last_logged
from .retrieval import EmbedderConfig

log = logging.getLogger("raglab")

# sentence-transformers' name for each FlagEmbedding pooling method
ST_POOLING = {"cls": "cls", "mean": "mean", "last_token": "lasttoken"}


def flag_arguments(base: EmbedderConfig, hp: dict[str, Any], train_file: str, output_dir: str):
    """FlagEmbedding's (model, data, training) argument dataclasses from our params."""
    import torch
    from FlagEmbedding.finetune.embedder.encoder_only.base import (
        EncoderOnlyEmbedderDataArguments,
        EncoderOnlyEmbedderModelArguments,
        EncoderOnlyEmbedderTrainingArguments,
    )

    gpu = torch.cuda.is_available()
    precision = hp["mixed_precision"]
    if precision not in {"fp32", "fp16", "bf16"}:
        raise ValueError(f"train_embed.mixed_precision must be fp32, fp16 or bf16, got {precision!r}")
    if precision == "fp16" and not gpu:
        raise ValueError("train_embed.mixed_precision=fp16 needs a GPU; use bf16 or fp32 on a CPU")
    model_args = EncoderOnlyEmbedderModelArguments(
        model_name_or_path=base.model, trust_remote_code=base.trust_remote_code
    )
    data_args = EncoderOnlyEmbedderDataArguments(
        train_data=[train_file],
        train_group_size=hp["train_group_size"],
        query_max_len=hp["query_max_len"],
        passage_max_len=hp["passage_max_len"],
        query_instruction_for_retrieval=base.query_instruction or None,
    )
    training_args = EncoderOnlyEmbedderTrainingArguments(
        output_dir=output_dir,
        learning_rate=float(hp["learning_rate"]),
        num_train_epochs=hp["epochs"],
        per_device_train_batch_size=hp["batch_size"],
        gradient_accumulation_steps=hp["gradient_accumulation_steps"],
        lr_scheduler_type=hp["lr_scheduler"],
        warmup_steps=hp["warmup_steps"],
        weight_decay=hp["weight_decay"],
        temperature=hp["temperature"],
        sentence_pooling_method=base.pooling,
        normalize_embeddings=True,
        seed=hp["seed"],
        logging_steps=hp["logging_steps"],
        save_strategy="no",
        report_to="none",
        dataloader_drop_last=True,
        fp16=precision == "fp16",
        bf16=precision == "bf16",  # on CPU: bfloat16 autocast, ~1.7x faster where AVX512-BF16/AMX exist
        use_cpu=not gpu,
    )
    return model_args, data_args, training_args


def write_sentence_transformers_config(model_dir: str | os.PathLike, pooling: str, max_seq_length: int,
                                       query_instruction: str | None) -> None:
    """Add sentence-transformers module files (pooling, normalisation, query prompt) to ``model_dir``."""
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(model_dir), max_seq_length=max_seq_length)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode=ST_POOLING[pooling])
    prompts = {"query": query_instruction} if query_instruction else None
    st = SentenceTransformer(modules=[word, pool, models.Normalize()], prompts=prompts, device="cpu")
    st.save(str(model_dir))


def train_embedder(base: EmbedderConfig, hp: dict[str, Any], train_file: str, output_dir: str | os.PathLike,
                   live_dir: str | os.PathLike) -> dict[str, Any]:
    """Fine-tune ``base.model`` on ``train_file``; the model lands in ``output_dir`` only when complete."""
    from dvclive import Live
    from FlagEmbedding.finetune.embedder.encoder_only.base import EncoderOnlyEmbedderRunner
    from transformers.integrations import DVCLiveCallback

    output_dir = Path(output_dir)
    work_dir = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(work_dir, ignore_errors=True)  # leftovers of an interrupted run
    model_args, data_args, training_args = flag_arguments(base, hp, train_file, str(work_dir))
    runner = EncoderOnlyEmbedderRunner(model_args=model_args, data_args=data_args, training_args=training_args)
    log.info("training on %d rows for %s epoch(s)", len(runner.train_dataset), hp["epochs"])
    live = Live(str(live_dir), save_dvc_exp=False, dvcyaml=None)
    runner.trainer.add_callback(DVCLiveCallback(live=live))
    runner.run()
    write_sentence_transformers_config(work_dir, base.pooling, hp["passage_max_len"], base.query_instruction)
    shutil.rmtree(output_dir, ignore_errors=True)
    os.replace(work_dir, output_dir)
    state = runner.trainer.state
    return {
        "train_rows": len(runner.train_dataset),
        "steps": state.global_step,
        "train_loss": last_logged(state.log_history, "train_loss"),
        "train_runtime_s": last_logged(state.log_history, "train_runtime"),
    }
