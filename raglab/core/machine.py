"""This machine: where the repo keeps its caches, and what its CPU accelerates.

``cache_dir`` is ``$RAGLAB_CACHE`` (default ``~/.cache/raglab``): downloaded wheels and the response cache,
outside DVC's outputs. ``fast_bf16`` reads the CPU flags: bfloat16 is several times faster than float32 for
training and serving where the CPU has AMX or AVX512-BF16, and several times slower where it has neither.
``resolve_precision`` turns the params' ``auto`` into what this machine should use, and says why.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("raglab")

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"


def cache_dir() -> Path:
    """Downloaded wheels and the response cache live here, outside DVC's outputs (``RAGLAB_CACHE``)."""
    return Path(os.environ.get("RAGLAB_CACHE") or Path.home() / ".cache" / "raglab")


def cpu_flags(cpuinfo: str | os.PathLike = CPUINFO) -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s first ``flags`` line); empty where there is none."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def bf16_flags(cpuinfo: str | os.PathLike = CPUINFO) -> list[str]:
    """The CPU's flags that compute bfloat16 natively (AMX, AVX512-BF16), sorted."""
    return sorted(cpu_flags(cpuinfo) & set(BF16_FLAGS))


def fast_bf16(cpuinfo: str | os.PathLike = CPUINFO) -> bool:
    """Whether the CPU computes bfloat16 natively (AMX or AVX512-BF16)."""
    return bool(bf16_flags(cpuinfo))


def resolve_precision(requested: str, what: str, *, gpu: bool, cpuinfo: str | os.PathLike = CPUINFO) -> str:
    """``bf16`` or ``fp32`` (or ``fp16``) for ``requested``; ``auto`` is bf16 on a GPU or on a CPU with AMX /
    AVX512-BF16, fp32 on any other CPU. The choice is logged with the flags it rests on."""
    if requested != "auto":
        return requested
    if gpu:
        choice, why = "bf16", "a GPU"
    else:
        flags = bf16_flags(cpuinfo)
        choice, why = ("bf16", f"CPU flags {', '.join(flags)}") if flags else (
            "fp32", f"no {' / '.join(BF16_FLAGS)} among the CPU flags")
    log.info("%s: auto precision is %s (%s)", what, choice, why)
    return choice
