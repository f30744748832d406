"""What both trainers share (FlagEmbedding's and trl's are transformers Trainers): the arguments
that come straight from a stage's params, resumable checkpoints, and DVCLive training curves.

Checkpoints live outside the stage's outputs (DVC deletes outputs before it runs a stage), stamped
with a fingerprint of the run (hyper-parameters, base model, training data): a re-run after an
interruption resumes from the last one, a changed run starts afresh, a finished run clears them.

transformers' ``DVCLiveCallback`` numbers its points by log event, so the x axis of a DVC plot
would count log calls (and the eval events in between) instead of training steps. The callback
here pins DVCLive's step to the trainer's global step before each log. The curves land in
``LIVE_DIR/plots/metrics/``: ``loss.tsv``, ``learning_rate.tsv``, ``eval/loss.tsv`` (what
``dvc.yaml``'s plots point at).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from transformers.integrations import DVCLiveCallback

from raglab.core.machine import resolve_precision
from raglab.params.pipeline import Trainer


def trainer_arguments(hp: Trainer) -> dict[str, Any]:
    """``TrainingArguments`` fields that map one to one onto a training stage's params."""
    import torch

    return dict(
        learning_rate=float(hp.learning_rate),
        num_train_epochs=hp.epochs,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        lr_scheduler_type=hp.lr_scheduler,
        warmup_steps=hp.warmup_steps,
        seed=hp.seed,
        logging_steps=hp.logging_steps,
        report_to="none",  # curves go through the callback below
        use_cpu=not torch.cuda.is_available(),
        # each process's loss is its own mean (gradients are averaged across processes): with the default (True)
        # the logged loss of a multi-process run is the global mean divided by the number of processes
        average_tokens_across_devices=False,
    )


def run_fingerprint(hp: dict[str, Any], base: dict[str, Any], files: list[str]) -> str:
    """What a resumable checkpoint must match: hyper-parameters, base model and training data."""
    h = hashlib.sha256(json.dumps([hp, base], sort_keys=True, default=str).encode())
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def checkpoint_to_resume(checkpoint_dir: Path, fingerprint: str, pattern: str = "checkpoint-*") -> bool:
    """True when ``checkpoint_dir`` holds checkpoints (``pattern``) of this very run; otherwise clear it."""
    stamp = checkpoint_dir / "fingerprint"
    if stamp.is_file() and stamp.read_text() == fingerprint and any(checkpoint_dir.glob(pattern)):
        return True
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True)
    stamp.write_text(fingerprint)
    return False


def last_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-N`` folder of a Trainer's output folder (None if there is none).

    The Trainer writes ``trainer_state.json`` last: a folder without it was cut off mid-write by a kill."""
    found = sorted((p for p in Path(checkpoint_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                   key=lambda p: int(p.name.split("-")[-1]))
    return str(found[-1]) if found else None


class StepDVCLiveCallback(DVCLiveCallback):
    def __init__(self, *args, step_offset: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_offset = step_offset

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if self.live is not None:
            self.live.step = self.step_offset + state.global_step
        super().on_log(args, state, control, model=model, logs=logs, **kwargs)


def live_callback(live_dir: str | os.PathLike, resume: bool = False, step_offset: int = 0) -> StepDVCLiveCallback:
    """A callback writing to ``live_dir``; DVC tracks that folder itself (no dvc.yaml, no exp of its own).

    ``resume`` appends to the curves already there; ``step_offset`` shifts this run's steps (a run that
    follows another on the same curve)."""
    from dvclive import Live

    return StepDVCLiveCallback(live=Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, resume=resume),
                               step_offset=step_offset)


def training_precision(requested: str, what: str) -> str:
    """``fp32``, ``fp16`` or ``bf16`` for a trainer's ``mixed_precision`` param: ``auto`` is bf16 on a GPU or on a
    CPU with AMX / AVX512-BF16, else fp32 (``raglab.core.machine``); fp16 needs a GPU."""
    import torch

    gpu = torch.cuda.is_available()
    if requested not in {"auto", "fp32", "fp16", "bf16"}:
        raise ValueError(f"{what}.mixed_precision must be auto, fp32, fp16 or bf16, got {requested!r}")
    if requested == "fp16" and not gpu:
        raise ValueError(f"{what}.mixed_precision=fp16 needs a GPU; use auto, bf16 or fp32 on a CPU")
    return resolve_precision(requested, what, gpu=gpu)


def relaunch_distributed(num_processes: int, module: str) -> None:
    """Run stage ``module`` again, with the same arguments, in ``num_processes`` data-parallel processes on this
    machine, unless it is one already or one is asked for: ``torch.distributed.run`` (torchrun), which the
    Trainer follows (NCCL on GPUs, gloo on CPUs; ``accelerate launch`` on a CPU-only machine runs one process
    whatever it is told). Rendezvous on 127.0.0.1, a free port. Replaces this process."""
    if num_processes > 1 and "LOCAL_RANK" not in os.environ:
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                  str(num_processes), "-m", module, *sys.argv[1:]])


class DataParallel:
    """This process among ``torchrun``'s (``RANK``, ``WORLD_SIZE``): the process group is started here (gloo on a
    CPU, NCCL on GPUs) when there are several, so that work around the Trainer (clearing and resuming checkpoints,
    writing the model) is done by the first process while the others ``wait``. One process: nothing to wait for."""

    def __init__(self):
        self.rank, self.size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        self.first = self.rank == 0
        if self.size > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def wait(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def share(self, value):
        """The first process's ``value``, in every process."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
