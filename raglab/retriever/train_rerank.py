"""Fine-tuning the cross-encoder (the second stage of retrieval) with FlagEmbedding's reranker trainer.

The trainer is FlagEmbedding's own (``EncoderOnlyRerankerRunner``: each query is read with its positive and
``train_group_size - 1`` negatives, and cross-entropy over the group's scores puts the positive first). This
module chooses the negatives, maps parameters onto its argument dataclasses, attaches DVCLive for the
training curves, and writes the model only when complete.

Negatives ``rows`` are the training rows' own (build_embed_negatives); ``mined`` are drawn from the tuned
embedder's ranking of the training passages (ranks ``mined_ranks``, the positive skipped): the very
candidates the reranker reorders at inference. A cross-encoder initialised from a bi-encoder (the CPU
profiles' MiniLM) has an untrained scoring head: before this stage it orders nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from raglab.core.formats import atomic_dir, read_jsonl, write_jsonl
from raglab.core.report import last_logged
from raglab.models.trainer import (
    checkpoint_to_resume,
    last_checkpoint,
    live_callback,
    run_fingerprint,
    trainer_arguments,
    training_precision,
)
from raglab.params.pipeline import TrainRerank
from raglab.retriever.data import QAPair, mine_hard_negatives
from raglab.retriever.rerank import NOT_TRAINED, RerankerConfig
from raglab.retriever.search import EmbedderConfig, load_embedder
from raglab.retriever.train import check_train_rows, resume_encoder_weights
from raglab.retriever.vocabulary import check_same_tokenizer, extend_vocabulary

log = logging.getLogger("raglab")


def training_rows(rows: list[dict], hp: TrainRerank, embedder: EmbedderConfig | None) -> tuple[list[dict], dict]:
    """The rows the reranker trains on: with ``mined`` negatives, each row's negatives are replaced by
    ``num_negatives`` drawn from the tuned embedder's ranks ``mined_ranks`` (the positive skipped)."""
    if hp.negatives == "rows":
        if missing := sum(not row["neg"] for row in rows):
            raise ValueError(f"train_rerank.negatives rows: {missing} training rows have no negative "
                             "(build_embed_negatives.num_negatives, or negatives: mined)")
        return rows, {}
    if embedder is None:
        raise ValueError("train_rerank.negatives mined needs the tuned embedder")
    pairs = [QAPair(row["query"], row["pos"][0], i) for i, row in enumerate(rows, start=1)]
    negatives, stats = mine_hard_negatives(pairs, load_embedder(embedder), hp.num_negatives, hp.mined_ranks, hp.seed)
    return [{**row, "neg": negs} for row, negs in zip(rows, negatives)], stats


def flag_arguments(base: RerankerConfig, hp: TrainRerank, train_file: str, output_dir: str):
    """FlagEmbedding's (model, data, training) argument dataclasses from our params."""
    from FlagEmbedding.abc.finetune.reranker import (
        AbsRerankerDataArguments,
        AbsRerankerModelArguments,
        AbsRerankerTrainingArguments,
    )

    precision = training_precision(hp.mixed_precision, "train_rerank")
    model_args = AbsRerankerModelArguments(model_name_or_path=base.local_path(),
                                           trust_remote_code=base.trust_remote_code)
    data_args = AbsRerankerDataArguments(
        train_data=[train_file],
        train_group_size=hp.train_group_size,
        query_max_len=hp.query_max_len,
        passage_max_len=hp.passage_max_len,
        query_instruction_for_rerank=base.query_instruction or None,
    )
    training_args = AbsRerankerTrainingArguments(
        output_dir=output_dir,
        **trainer_arguments(hp),
        weight_decay=hp.weight_decay,
        save_strategy="steps",
        save_steps=hp.save_steps,
        save_total_limit=1,
        dataloader_drop_last=True,  # the model views the scores as (batch, group): a short last batch would not fit
        fp16=precision == "fp16",
        bf16=precision == "bf16",
    )
    return model_args, data_args, training_args


def write_not_trained(output_dir: str | os.PathLike, live_dir: str | os.PathLike) -> None:
    """``output_dir`` and ``live_dir`` (the stage's outputs) holding only a note that nothing was trained: the
    params leave every retriever without the tuned cross-encoder (``train_rerank.enabled: false``), so the stages
    after it run without an hour of training they would not use."""
    note = "No cross-encoder was trained: `train_rerank.enabled` is false, and no retriever is X+rerank.\n"
    for folder in (output_dir, live_dir):
        with atomic_dir(folder) as work_dir:
            work_dir.mkdir()
            (work_dir / NOT_TRAINED).write_text(note, encoding="utf-8")


def train_reranker(base: RerankerConfig, hp: TrainRerank, train_file: str, output_dir: str | os.PathLike,
                   live_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike,
                   embedder: EmbedderConfig | None = None) -> dict[str, Any]:
    """Fine-tune ``base.model`` on ``train_file``'s rows (negatives as ``hp.negatives`` says); the model lands in
    ``output_dir`` only when complete; an interrupted run resumes from its last checkpoint."""
    from FlagEmbedding.finetune.reranker.encoder_only.base import EncoderOnlyRerankerRunner
    from transformers import set_seed

    output_dir, checkpoint_dir = Path(output_dir), Path(checkpoint_dir)
    rows = read_jsonl(train_file)
    check_train_rows(rows, train_file)
    fingerprint = run_fingerprint(hp.model_dump(), [asdict(base), asdict(embedder) if embedder else None], [train_file])
    resume = checkpoint_to_resume(checkpoint_dir, fingerprint, "run/checkpoint-*")
    rows, mining = training_rows(rows, hp, embedder if hp.negatives == "mined" else None)
    if len(rows) < hp.batch_size:
        raise ValueError(f"{train_file}: {len(rows)} training rows, fewer than one batch of {hp.batch_size}")
    with tempfile.TemporaryDirectory(prefix="train_rerank-") as tmp:
        start, added = base, 0
        if hp.add_unknown_chars:
            texts = [t for row in rows for t in [row["query"], *row["pos"], *row["neg"]]]
            added = extend_vocabulary(base.local_path(), texts, hp.add_unknown_chars, hp.seed, Path(tmp) / "base",
                                      base.trust_remote_code)
            log.info("vocabulary: %d characters the tokenizer did not know added as tokens", added)
            start = replace(base, model=str(Path(tmp) / "base"), revision=None)
        rows_file = str(Path(tmp) / "train.jsonl")
        write_jsonl(rows_file, rows)
        run_dir = checkpoint_dir / "run"  # FlagEmbedding refuses a non-empty folder unless it resumes
        model_args, data_args, training_args = flag_arguments(start, hp, rows_file, str(run_dir))
        training_args.resume_from_checkpoint = last_checkpoint(run_dir) if resume else None
        set_seed(hp.seed)  # the scoring head a bi-encoder lacks starts from the same draw each run
        runner = EncoderOnlyRerankerRunner(model_args=model_args, data_args=data_args, training_args=training_args)
        resume_encoder_weights(runner.trainer)
        log.info("training the reranker on %d rows (%s negatives, groups of %d) for %s epoch(s)%s", len(rows),
                 hp.negatives, hp.train_group_size, hp.epochs,
                 f", resuming from {training_args.resume_from_checkpoint}" if training_args.resume_from_checkpoint else "")
        runner.trainer.add_callback(live_callback(live_dir, resume=resume))
        runner.run()  # saves the model (save_pretrained, safetensors) and tokenizer into run_dir
        with atomic_dir(output_dir) as work_dir:
            shutil.copytree(run_dir, work_dir, ignore=shutil.ignore_patterns("checkpoint-*", "training_args.bin"))
            check_same_tokenizer(work_dir, start.local_path(), base.trust_remote_code)
    history = runner.trainer.state.log_history
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    return {
        "train_rows": len(rows),
        "added_tokens": added,
        "negatives": hp.negatives,
        **{f"mined_{k}": v for k, v in mining.items()},
        "steps": runner.trainer.state.global_step,
        "train_loss": last_logged(history, "train_loss"),
        "train_runtime_s": last_logged(history, "train_runtime"),
    }
