"""The DAG under DVC, in a throwaway git repo: the demo profile on the synthetic mirror.

Both tracks run: the retriever (packaged MiniLM) and the generator (tiny LLM served by vLLM).

`dvc repro` runs every stage; a second `dvc repro` runs none; changing a
train_embed parameter re-runs exactly train_embed and the retrieval parts of
serve_infer and score, and `dvc metrics diff` reports the change; changing a
train_llm parameter re-runs the generator's stages only (no teacher request);
changing both back restores every output from DVC's run-cache. Also checks that the tuned embedder loads
in both FlagEmbedding and sentence-transformers with the same embeddings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from raglab.profiles import flatten, load_profile

REPO = Path(__file__).resolve().parents[1]
ALL_STAGES = {"download@data", "download@llm", "download@teacher", "build_sft", "distill_cot",
              "build_embed_negatives", "train_llm", "train_embed", "serve_infer@retrieval", "serve_infer@generation",
              "serve_infer@math", "score@retrieval", "score@generation", "score@math"}

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_params(params_file: Path, pairs: list[tuple[str, object]]) -> None:
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    for dotted, value in pairs:
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory, minilm_dir, tiny_llm) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("dvc-repo")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    files = [f for f in tracked.stdout.split("\0") if f and (REPO / f).is_file()]
    assert "dvc.yaml" in files, "run the tests from a git checkout of the repo"
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MINILM_DIR": minilm_dir,
        "TINY_LLM_DIR": tiny_llm,
        "HF_HUB_OFFLINE": "1",
        "RAGLAB_CACHE": str(tmp_path_factory.mktemp("raglab-cache")),
        "DVC_NO_ANALYTICS": "1",
        "RAGAS_DO_NOT_TRACK": "true",
        "TOKENIZERS_PARALLELISM": "false",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    os.environ["MINILM_DIR"], os.environ["TINY_LLM_DIR"] = minilm_dir, tiny_llm  # the profile's $VARS
    set_params(root / "params.yaml", flatten(load_profile(str(REPO / "profiles" / "demo.yaml"))))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "demo"]):
        run(cmd, root, env)
    return root, env


def test_repro_skip_partial_rerun_and_run_cache(dvc_repo):
    root, env = dvc_repo
    demo = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    first = run(["dvc", "repro"], root, env)
    assert stages_run(first) == ALL_STAGES
    first_metrics = {name: json.loads((root / "metrics" / f"{name}.json").read_text())
                     for name in ("retrieval", "generation", "math")}
    metrics = json.loads((root / "metrics" / "retrieval.json").read_text())
    assert set(metrics) == {"test", "val"} and set(metrics["test"]) == {"base", "tuned"}
    assert 0 <= metrics["test"]["tuned"]["context_recall"] <= 1
    generation = json.loads((root / "metrics" / "generation.json").read_text())
    assert set(generation) == {"test"} and set(generation["test"]) == {"base", "sft"}
    assert set(generation["test"]["sft"]) == {"em", "cosine", "origin"}
    math = json.loads((root / "metrics" / "math.json").read_text())
    assert set(math) == {"base", "sft", "teacher"} and 0 <= math["sft"]["accuracy"] <= 1
    distill = json.loads((root / "data" / "distill" / "report.json").read_text())
    # 40 training questions, minus any that is also an eval question; none is lost
    assert distill["questions"] == 40 - distill["dropped"].get("train_question_also_in_eval", 0)
    assert distill["kept"] + len((root / "data" / "distill" / "failed.jsonl").read_text().splitlines()) == \
        distill["questions"]
    assert json.loads((root / "models" / "base" / "llm" / "source.json").read_text())["kind"] == "local"
    shown = run(["dvc", "metrics", "show", "--json"], root, env)
    for key in ("em", "cosine", "origin", "context_recall", "context_relevance", "accuracy"):
        assert f'"{key}"' in shown
    # every plot of dvc.yaml has its data, and training curves are indexed by optimizer step
    for plot in yaml.safe_load((root / "dvc.yaml").read_text())["plots"]:
        (spec,) = plot.values()
        for data_file in spec["y"]:
            assert (root / data_file).is_file(), f"plot data {data_file} missing"
    steps = json.loads((root / "metrics" / "train_embed.json").read_text())["steps"]
    loss_steps = [int(line.split("\t")[0]) for line in
                  (root / "dvclive/train_embed/plots/metrics/loss.tsv").read_text().splitlines()[1:]]
    assert loss_steps == list(range(1, steps + 1)), loss_steps  # the demo logs every step

    second = run(["dvc", "repro"], root, env)
    assert stages_run(second) == set()
    assert "Data and pipelines are up to date" in run(["dvc", "status"], root, env)

    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline"], root, env)
    set_params(root / "params.yaml", [("train_embed.learning_rate", 2.0e-4)])
    third = run(["dvc", "repro"], root, env)
    # the retriever's stages only: the LLM is not served again
    assert stages_run(third) == {"train_embed", "serve_infer@retrieval", "score@retrieval"}

    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], root, env))
    assert "metrics/train_embed.json" in diff, diff
    assert "train_loss" in diff["metrics/train_embed.json"]
    loss = diff["metrics/train_embed.json"]["train_loss"]
    assert loss["old"] != loss["new"]

    # the generator's stages only: no teacher request (distill_cot does not run), no retriever stage
    set_params(root / "params.yaml", [("train_llm.learning_rate", 1.0e-3)])
    fourth = run(["dvc", "repro"], root, env)
    assert stages_run(fourth) == {"train_llm", "serve_infer@generation", "serve_infer@math", "score@generation",
                                  "score@math"}

    # both changes undone: DVC's run-cache restores every output, nothing trains or serves again
    set_params(root / "params.yaml", [("train_embed.learning_rate", demo["train_embed"]["learning_rate"]),
                                      ("train_llm.learning_rate", demo["train_llm"]["learning_rate"])])
    fifth = run(["dvc", "repro"], root, env)
    assert stages_run(fifth) == set(), fifth
    restored = set(re.findall(r"Stage '([^']+)' is cached - skipping run", fifth))
    assert restored == stages_run(third) | stages_run(fourth), fifth
    for name in ("retrieval", "generation", "math"):
        assert json.loads((root / "metrics" / f"{name}.json").read_text()) == first_metrics[name]


def test_tuned_embedder_loads_in_flagembedding_and_sentence_transformers(dvc_repo):
    root, _ = dvc_repo
    model_dir = root / "models" / "embedder"
    if not model_dir.is_dir():
        pytest.fail("models/embedder missing: test_repro_skip_partial_rerun_and_run_cache must run first")
    from FlagEmbedding import FlagModel
    from sentence_transformers import SentenceTransformer

    texts = ["Net income for Aurora Widgets totaled $12.1 million in 2023.", "Where are the offices?"]
    flag = FlagModel(str(model_dir), pooling_method="mean", normalize_embeddings=True, use_fp16=False, devices="cpu")
    st = SentenceTransformer(str(model_dir), device="cpu")
    a = flag.encode_corpus(texts)
    b = st.encode(texts, normalize_embeddings=False)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)  # the Normalize module is saved
    assert np.allclose(a, b, atol=1e-4)
    assert (model_dir / "model.safetensors").is_file()
