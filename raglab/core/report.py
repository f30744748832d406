"""Stage bookkeeping: what a stage read, dropped and wrote, and how long it took.

Each stage opens a :class:`StageReport`, records counts as it goes, and on exit
logs a one-line summary and (optionally) writes the report as JSON, which DVC
tracks like any other output.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from raglab.core.formats import write_json

log = logging.getLogger("raglab")


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("RAGLAB_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in ("httpx", "httpx2"):  # one line per request: the progress bars say it better
        logging.getLogger(name).setLevel(logging.WARNING)


class StageReport:
    def __init__(self, stage: str, path: str | os.PathLike | None = None):
        self.stage = stage
        self.path = Path(path) if path else None
        self.read: dict[str, int] = {}
        self.dropped: Counter[str] = Counter()
        self.wrote: dict[str, int] = {}
        self.extra: dict[str, Any] = {}
        self._t0 = time.perf_counter()

    def __enter__(self) -> StageReport:
        setup_logging()
        log.info("[%s] start", self.stage)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()

    def add_read(self, name: str, n: int) -> None:
        self.read[name] = n
        log.info("[%s] read %s: %d", self.stage, name, n)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def add_wrote(self, name: str, n: int) -> None:
        self.wrote[name] = n
        log.info("[%s] wrote %s: %d", self.stage, name, n)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "read": self.read,
            "dropped": dict(sorted(self.dropped.items())),
            "wrote": self.wrote,
            **self.extra,
            "seconds": round(time.perf_counter() - self._t0, 2),
        }

    def finish(self) -> dict[str, Any]:
        summary = self.as_dict()
        if self.path is not None:
            write_json(self.path, summary)
        dropped = ", ".join(f"{k}={v}" for k, v in summary["dropped"].items()) or "none"
        log.info(
            "[%s] done in %.1fs | read %s | dropped %s | wrote %s",
            self.stage,
            summary["seconds"],
            _fmt(summary["read"]),
            dropped,
            _fmt(summary["wrote"]),
        )
        return summary


def last_logged(log_history: list[dict[str, Any]], key: str) -> Any:
    """The last value of ``key`` in a transformers Trainer's ``state.log_history`` (None if never logged)."""
    return next((entry[key] for entry in reversed(log_history) if key in entry), None)


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items()) or "nothing"
