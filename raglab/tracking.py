"""Training curves with DVCLive, one point per optimizer step.

transformers' ``DVCLiveCallback`` numbers its points by log event, so the x axis
of a DVC plot would count log calls (and the eval events in between) instead of
training steps. This callback pins DVCLive's step to the trainer's global step
before each log. The curves land in ``LIVE_DIR/plots/metrics/``: ``loss.tsv``,
``learning_rate.tsv``, ``eval/loss.tsv`` (what ``dvc.yaml``'s plots point at).
"""

from __future__ import annotations

import os

from transformers.integrations import DVCLiveCallback


class StepDVCLiveCallback(DVCLiveCallback):
    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if self.live is not None:
            self.live.step = state.global_step
        super().on_log(args, state, control, model=model, logs=logs, **kwargs)


def live_callback(live_dir: str | os.PathLike, resume: bool = False) -> StepDVCLiveCallback:
    """A callback writing to ``live_dir``; DVC tracks that folder itself (no dvc.yaml, no exp of its own)."""
    from dvclive import Live

    return StepDVCLiveCallback(live=Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, resume=resume))
