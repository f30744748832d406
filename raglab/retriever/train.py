"""Contrastive fine-tuning of the embedder with FlagEmbedding's encoder-only trainer.

The trainer is FlagEmbedding's own (``EncoderOnlyEmbedderRunner``: InfoNCE over
the positive, the row's sampled negatives and in-batch negatives, with a
temperature). This module only maps parameters onto its argument dataclasses,
attaches DVCLive for the training curves, and makes the saved model loadable by
sentence-transformers as well (pooling and normalisation written as modules).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from raglab.core.formats import DataError, atomic_dir, read_jsonl, write_jsonl
from raglab.core.report import last_logged
from raglab.models.trainer import (
    DataParallel,
    checkpoint_to_resume,
    last_checkpoint,
    live_callback,
    run_fingerprint,
    trainer_arguments,
    training_precision,
)
from raglab.params.pipeline import TrainEmbed
from raglab.retriever.data import spread_repeated_passages
from raglab.retriever.search import EmbedderConfig
from raglab.retriever.vocabulary import check_same_tokenizer, extend_vocabulary

log = logging.getLogger("raglab")

# sentence-transformers' name for each FlagEmbedding pooling method
ST_POOLING = {"cls": "cls", "mean": "mean", "last_token": "lasttoken"}


def length_buckets(rows: list[dict], tokenizer, n_buckets: int, max_len: int) -> list[list[dict]]:
    """``rows`` sorted by the token length of their longest passage (positive or negative, capped at
    ``max_len``) and cut into ``n_buckets`` buckets of equal size.

    Batches drawn from one bucket hold passages of similar length, so little of each batch is
    padding: financial-qa-10K passages have a median of 38 tokens, but a random batch of 64 is
    usually padded to the 128-token cap by its longest member.
    """
    if n_buckets < 1:
        raise ValueError(f"train_embed.length_buckets must be >= 1, got {n_buckets}")
    lengths = [
        min(max_len, max(len(ids) for ids in tokenizer(row["pos"] + row["neg"], add_special_tokens=True)["input_ids"]))
        for row in rows
    ]
    order = sorted(range(len(rows)), key=lengths.__getitem__)
    size, rest = divmod(len(rows), n_buckets)
    buckets, start = [], 0
    for i in range(n_buckets):
        end = start + size + (i < rest)
        buckets.append([rows[j] for j in order[start:end]])
        start = end
    return buckets


def check_train_rows(rows: list[dict], path: str | os.PathLike) -> None:
    """FlagEmbedding's training format: ``query`` text, ``pos`` a non-empty list of texts, ``neg`` a
    list of texts. A located error here beats a crash inside the trainer."""
    if not rows:
        raise DataError(path, "no training rows")
    for i, row in enumerate(rows, start=1):
        if not isinstance(row.get("query"), str) or not row["query"].strip():
            raise DataError(path, "expected non-empty text", row=i, field="query")
        for field, min_len in (("pos", 1), ("neg", 0)):
            texts = row.get(field)
            if not isinstance(texts, list) or len(texts) < min_len or not all(isinstance(t, str) for t in texts):
                raise DataError(path, f"expected a list of at least {min_len} text(s)", row=i, field=field)


def merge_weights(model_dir: str | os.PathLike, run_dirs: list[str | os.PathLike], base_path: str,
                  base_share: float, trust_remote_code: bool = False) -> None:
    """Write into ``model_dir`` the weights ``(1 - base_share) * mean(runs) + base_share * base``.

    The runs are fine-tuned from the same base with different seeds: their mean is a uniform model
    soup (Wortsman et al., 2022a), which evens out what one seed's batch order and dropout happen to
    teach. Interpolating towards the base (WiSE-FT, Wortsman et al., 2022b) keeps most of what
    fine-tuning taught and some of what it made the model forget. Both are chosen on the validation
    slice like any other hyper-parameter.
    """
    from transformers import AutoModel, AutoTokenizer

    if not 0 <= base_share < 1:
        raise ValueError(f"train_embed.merge_base_share must be in [0, 1), got {base_share}")
    if not run_dirs:
        raise ValueError("merge_weights needs at least one fine-tuned run")

    def load(path):
        return AutoModel.from_pretrained(str(path), trust_remote_code=trust_remote_code)

    carrier = load(run_dirs[0])  # config and non-float buffers come from the first run
    run_share = (1 - base_share) / len(run_dirs)

    def sources():  # one state dict in memory at a time; the first run is already loaded
        yield str(run_dirs[0]), run_share, carrier.state_dict()
        for path in run_dirs[1:]:
            yield str(path), run_share, load(path).state_dict()
        if base_share:
            yield base_path, base_share, load(base_path).state_dict()

    shapes = {key: value.shape for key, value in carrier.state_dict().items() if value.is_floating_point()}
    merged = dict.fromkeys(shapes, 0.0)
    for path, share, state in sources():
        for key, shape in shapes.items():
            if key not in state or state[key].shape != shape:
                raise ValueError(f"cannot merge {run_dirs[0]} with {path}: parameter {key} differs")
            merged[key] = merged[key] + share * state[key]
    carrier.load_state_dict(merged, strict=False)
    carrier.save_pretrained(str(model_dir), safe_serialization=True)
    # the tokenizer too: without it, sentence-transformers would build the folder an empty-vocabulary one
    AutoTokenizer.from_pretrained(str(run_dirs[0]), trust_remote_code=trust_remote_code).save_pretrained(str(model_dir))


def flag_arguments(base: EmbedderConfig, hp: TrainEmbed, train_files: list[str], output_dir: str):
    """FlagEmbedding's (model, data, training) argument dataclasses from our params.

    With more than one training file, every batch is drawn from a single file
    (FlagEmbedding's ``same_dataset_within_batch``): that is how length buckets take effect.
    """
    from FlagEmbedding.finetune.embedder.encoder_only.base import (
        EncoderOnlyEmbedderDataArguments,
        EncoderOnlyEmbedderModelArguments,
        EncoderOnlyEmbedderTrainingArguments,
    )

    precision = training_precision(hp.mixed_precision, "train_embed")
    model_args = EncoderOnlyEmbedderModelArguments(
        model_name_or_path=base.local_path(), trust_remote_code=base.trust_remote_code
    )
    data_args = EncoderOnlyEmbedderDataArguments(
        train_data=list(train_files),
        same_dataset_within_batch=len(train_files) > 1,
        train_group_size=hp.train_group_size,
        query_max_len=hp.query_max_len,
        passage_max_len=hp.passage_max_len,
        query_instruction_for_retrieval=base.query_instruction or None,
    )
    training_args = EncoderOnlyEmbedderTrainingArguments(
        output_dir=output_dir,
        **trainer_arguments(hp),
        weight_decay=hp.weight_decay,
        temperature=hp.temperature,
        sentence_pooling_method=base.pooling,
        normalize_embeddings=True,
        save_strategy="steps",
        save_steps=hp.save_steps,
        save_total_limit=1,
        dataloader_drop_last=True,
        fp16=precision == "fp16",
        bf16=precision == "bf16",  # on CPU: bfloat16 autocast, ~1.5x faster where AVX512-BF16/AMX exist
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


def resume_encoder_weights(trainer) -> None:
    """Make ``trainer`` restore FlagEmbedding checkpoints properly when it resumes.

    FlagEmbedding's trainer wraps the encoder in a module whose state-dict keys carry a ``model.``
    prefix, but saves checkpoints with the encoder's own ``save_pretrained``. transformers' resume
    loads a checkpoint into the wrapper, so every key would be missing (and transformers 5 trips over
    the wrapper before it even says so): the weights are loaded into the encoder here, strictly.
    Optimizer, scheduler and RNG states are restored by the Trainer as usual."""
    from safetensors.torch import load_file

    def load_encoder(resume_from_checkpoint: str, model=None) -> None:
        encoder = (model or trainer.model).model
        missing, unexpected = encoder.load_state_dict(load_file(Path(resume_from_checkpoint) / "model.safetensors"),
                                                      strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{resume_from_checkpoint} does not fit the encoder (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]})")

    trainer._load_from_checkpoint = load_encoder


def train_embedder(base: EmbedderConfig, hp: TrainEmbed, train_file: str, output_dir: str | os.PathLike,
                   live_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """Fine-tune ``base.model`` on ``train_file`` (``soup_size`` runs, averaged into one model when > 1);
    the model lands in ``output_dir`` only when complete.

    Each run checkpoints into ``checkpoint_dir/seed-N`` every ``save_steps`` steps and marks itself done
    when finished, so a re-run after an interruption skips the finished runs of a soup and resumes the
    interrupted one from its last checkpoint."""
    from FlagEmbedding.finetune.embedder.encoder_only.base import EncoderOnlyEmbedderRunner

    output_dir, checkpoint_dir = Path(output_dir), Path(checkpoint_dir)
    procs = DataParallel()  # one of num_processes processes (torchrun), or the only one
    if procs.first:
        resume = checkpoint_to_resume(checkpoint_dir, run_fingerprint(hp.model_dump(), asdict(base), [train_file]),
                                      "seed-*")
    resume = procs.share(resume if procs.first else None)  # every process resumes, or none
    if not isinstance(hp.soup_size, int) or hp.soup_size < 1:
        raise ValueError(f"train_embed.soup_size must be an integer >= 1, got {hp.soup_size!r}")
    rows = read_jsonl(train_file)
    check_train_rows(rows, train_file)
    batch = hp.batch_size
    with tempfile.TemporaryDirectory(prefix="train_embed-") as tmp:
        start, added = base, 0  # the model training starts from: the base, or the base with new tokens
        if hp.add_unknown_chars:
            texts = [t for row in rows for t in [row["query"], *row["pos"], *row["neg"]]]
            extended = Path(tmp) / "base-extended"
            added = extend_vocabulary(base.local_path(), texts, hp.add_unknown_chars, hp.seed, extended,
                                      base.trust_remote_code)
            log.info("vocabulary: %d characters the tokenizer did not know added as tokens", added)
            start = replace(base, model=str(extended), revision=None)
        train_files, groups = [train_file], [rows]
        if hp.length_buckets > 1:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(start.local_path(), trust_remote_code=base.trust_remote_code)
            groups = length_buckets(rows, tokenizer, hp.length_buckets, hp.passage_max_len)
        groups, beside_repeat = spread_repeated_passages(groups)
        if beside_repeat:
            log.warning("%d rows share a batch file with another question of their passage (more questions of one "
                        "passage than files)", beside_repeat)
        if len(groups) > 1:
            if min(len(g) for g in groups) < batch:
                raise ValueError(f"train_embed: {len(groups)} training files (length_buckets={hp.length_buckets}, "
                                 f"repeated passages apart) leave one of {min(len(g) for g in groups)} rows, fewer "
                                 f"than one batch of {batch}: use fewer buckets")
            train_files = [str(Path(tmp) / f"bucket-{i:02d}.jsonl") for i in range(len(groups))]
            for path, bucket in zip(train_files, groups):
                write_jsonl(path, bucket)
        # a soup trains one run per seed (seed, seed + 1, ...)
        seeds = [hp.seed + i for i in range(hp.soup_size)]
        run_dirs = [checkpoint_dir / f"seed-{seed}" for seed in seeds]
        states = []
        for seed, run_dir in zip(seeds, run_dirs):
            done = run_dir / "done.json"
            if done.is_file():  # finished before an interruption
                states.append(json.loads(done.read_text()))
                log.info("run %d of %d (seed %d) finished earlier: kept", len(states), len(seeds), seed)
                continue
            model_args, data_args, training_args = flag_arguments(start, hp.model_copy(update={"seed": seed}), train_files,
                                                                  str(run_dir))
            training_args.resume_from_checkpoint = last_checkpoint(run_dir)
            runner = EncoderOnlyEmbedderRunner(model_args=model_args, data_args=data_args, training_args=training_args)
            resume_encoder_weights(runner.trainer)
            log.info("training on %d rows (%d file(s)) for %s epoch(s), seed %d (run %d of %d)%s",
                     len(rows), len(train_files), hp.epochs, seed, len(states) + 1, len(seeds),
                     f", resuming from {training_args.resume_from_checkpoint}" if training_args.resume_from_checkpoint else "")
            # one curve: each run's steps follow the previous run's
            runner.trainer.add_callback(live_callback(live_dir, resume=bool(states) or resume,
                                                      step_offset=sum(s["global_step"] for s in states)))
            runner.run()
            state = {"global_step": runner.trainer.state.global_step, "log_history": runner.trainer.state.log_history}
            if procs.first:
                done.write_text(json.dumps(state))
            procs.wait()
            states.append(state)
        summary = {
            "train_rows": len(rows),
            "added_tokens": added,
            # batches are full (drop-last) in each file: these rows sit out each epoch, others the next
            "rows_outside_full_batches_per_epoch": sum(len(g) % batch for g in groups),
            # over all runs of a soup; the loss is their mean
            "steps": sum(s["global_step"] for s in states),
            "train_loss": sum(last_logged(s["log_history"], "train_loss") for s in states) / len(states),
            "train_runtime_s": sum(last_logged(s["log_history"], "train_runtime") for s in states),
        }
        if not procs.first:  # the model is the first process's to write
            procs.wait()
            return summary
        with atomic_dir(output_dir) as work_dir:
            if len(run_dirs) > 1 or hp.merge_base_share:
                merge_weights(work_dir, run_dirs, start.local_path(), hp.merge_base_share, base.trust_remote_code)
            else:
                shutil.copytree(run_dirs[0], work_dir, ignore=shutil.ignore_patterns("checkpoint-*", "done.json"))
            write_sentence_transformers_config(work_dir, base.pooling, hp.passage_max_len, base.query_instruction)
            check_same_tokenizer(work_dir, start.local_path(), base.trust_remote_code)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    procs.wait()
    return summary
