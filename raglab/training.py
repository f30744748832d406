"""What both trainers share (FlagEmbedding's and trl's are transformers Trainers): the arguments
that come straight from a stage's params, and DVCLive training curves.

transformers' ``DVCLiveCallback`` numbers its points by log event, so the x axis of a DVC plot
would count log calls (and the eval events in between) instead of training steps. The callback
here pins DVCLive's step to the trainer's global step before each log. The curves land in
``LIVE_DIR/plots/metrics/``: ``loss.tsv``, ``learning_rate.tsv``, ``eval/loss.tsv`` (what
``dvc.yaml``'s plots point at).
"""

from __future__ import annotations

import os
from typing import Any

from transformers.integrations import DVCLiveCallback


def trainer_arguments(hp: dict[str, Any]) -> dict[str, Any]:
    """``TrainingArguments`` fields that map one to one onto a training stage's params."""
    import torch

    return dict(
        learning_rate=float(hp["learning_rate"]),
        num_train_epochs=hp["epochs"],
        per_device_train_batch_size=hp["batch_size"],
        gradient_accumulation_steps=hp["gradient_accumulation_steps"],
        lr_scheduler_type=hp["lr_scheduler"],
        warmup_steps=hp["warmup_steps"],
        seed=hp["seed"],
        logging_steps=hp["logging_steps"],
        report_to="none",  # curves go through the callback below
        use_cpu=not torch.cuda.is_available(),
    )


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
