"""The DAG under DVC, in a throwaway git repo: the demo profile on the synthetic mirror.

Both tracks run: the retriever (packaged MiniLM) and the generator (tiny LLM served by vLLM).

`dvc repro` runs every stage; a second `dvc repro` runs none; changing a
train_embed parameter re-runs exactly train_embed and the retrieval parts of
serve_infer and score, and `dvc metrics diff` reports the change; changing it
back restores every output from DVC's run-cache. Every params group re-runs exactly
its readers and their descendants (a dry-run matrix). Also checks that the tuned embedder loads
in both FlagEmbedding and sentence-transformers with the same embeddings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from raglab.experiments.profiles import flatten
from raglab.params.loader import load_profile

REPO = Path(__file__).resolve().parents[1]
ALL_STAGES = {"download@data", "download@llm", "download@teacher", "build_sft", "distill_cot", "build_chunks",
              "build_pairs", "write_questions", "build_embed_negatives", "train_llm", "train_embed", "train_rerank",
              "serve_infer_retrieval", "serve_infer_generation", "serve_infer_math", "serve_infer_rag",
              "score_retrieval", "score_generation", "score_math", "score_rag"}

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
def dvc_repo(tmp_path_factory, minilm_dir, tiny_llm) -> Iterator[tuple[Path, dict[str, str]]]:
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
    # no judge: the demo's served judge costs a vLLM start per scoring, and score_rag runs three times here
    # (make demo in CI runs it; tests/test_rag.py tests judging against the scripted server)
    set_params(root / "params.yaml", [("score.rag.judge.kind", "none")])
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "demo"]):
        run(cmd, root, env)
    yield root, env
    # the demo's stages share one kept-alive vLLM server (serving.keep_alive_s): stopped here, not left to idle
    run([sys.executable, "-m", "raglab.serving.pool", "stop"], root, env)


def test_repro_skip_partial_rerun_and_run_cache(dvc_repo):
    root, env = dvc_repo
    demo = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    first = run(["dvc", "repro"], root, env)
    assert stages_run(first) == ALL_STAGES
    first_metrics = {name: json.loads((root / "metrics" / f"{name}.json").read_text())
                     for name in ("retrieval", "generation", "math", "rag")}
    metrics = json.loads((root / "metrics" / "retrieval.json").read_text())
    assert set(metrics) == {"test", "val"}
    assert set(metrics["test"]) == {"base", "tuned", "tuned+base_rerank", "tuned+rerank"}
    assert 0 <= metrics["test"]["tuned"]["context_recall"] <= 1
    assert metrics["test"]["tuned+rerank"]["rerank_p50_s"] > 0 and "rerank_p50_s" not in metrics["test"]["tuned"]
    generation = json.loads((root / "metrics" / "generation.json").read_text())
    assert set(generation) == {"test"} and set(generation["test"]) == {"base", "sft"}
    assert set(generation["test"]["sft"]) == {"em", "em_any", "em_official", "f1", "cosine", "cosine_minilm", "origin"}
    math = json.loads((root / "metrics" / "math.json").read_text())
    assert set(math) == {"base", "sft", "teacher"} and 0 <= math["sft"]["accuracy"] <= 1
    # the RAG system: every retriever's hit@k, every retriever+generator's answers, the router, the served judge
    rag = json.loads((root / "metrics" / "rag.json").read_text())
    retrievers = ["bm25", "base", "tuned", "hybrid", "hybrid+rerank", "hybrid+query_likelihood"]  # + the tiny LLM
    generators = ["base", "sft"]
    assert set(rag["test"]) == set(retrievers) | {f"{r}+{g}" for r in retrievers for g in generators}
    assert set(rag["test"]["bm25"]) == {"hit@1", "hit@3", "hit@5", "hit@10", "mrr@10"}
    assert set(rag["test"]["hybrid+sft"]) == {"em", "em_any", "em_official", "f1", "cosine", "cosine_minilm", "origin",
                                              "origin_gold"}  # no judge here (see dvc_repo)
    assert rag["routing"]["embedding"]["routing_accuracy"] >= 0.9  # English maths vs Chinese reading questions
    assert rag["judge"].startswith("none")  # skipped, and said so
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
    # the retriever's stages and the RAG system's (which retrieves with it); the generation and maths tracks do not
    assert stages_run(third) == {"train_embed", "train_rerank", "serve_infer_retrieval", "score_retrieval",
                                 "serve_infer_rag", "score_rag"}  # the reranker mines with the tuned embedder

    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], root, env))
    assert "metrics/train_embed.json" in diff, diff
    assert "train_loss" in diff["metrics/train_embed.json"]
    loss = diff["metrics/train_embed.json"]["train_loss"]
    assert loss["old"] != loss["new"]

    # the change undone: DVC's run-cache restores every output, nothing trains or serves again. (Which stages a
    # change to each other params group re-runs, the generator's among them, is the dry-run matrix below: a
    # second real re-run here cost CI ~5 minutes of training and vLLM starts.)
    set_params(root / "params.yaml", [("train_embed.learning_rate", demo["train_embed"]["learning_rate"])])
    undone = run(["dvc", "repro"], root, env)
    assert stages_run(undone) == set(), undone
    restored = set(re.findall(r"Stage '([^']+)' is cached - skipping run", undone))
    assert restored == stages_run(third), undone
    for name in ("retrieval", "generation", "math", "rag"):
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


# Every params group, one value changed -> the stages that must run: those that read it, and their descendants.
RAG = {"serve_infer_rag", "score_rag"}  # the RAG system reads both models, so both tracks re-run it
RERANKED = {"serve_infer_retrieval", "score_retrieval"} | RAG  # what reads the reranker
RETRIEVER = {"train_embed", "train_rerank"} | RERANKED
GENERATOR = {"train_llm", "serve_infer_generation", "serve_infer_math", "score_generation", "score_math"} | RAG
# the teacher's questions about the user's chunks: build_embed_negatives reads their pairs (train_on: questions),
# train_llm their SFT records (train_llm.mixture.own), so both tracks follow them
QUESTIONS = {"write_questions", "build_embed_negatives"} | RETRIEVER | GENERATOR
INVALIDATION = {
    "download.limit": {"download@data", "build_sft", "distill_cot", "build_embed_negatives"} | RETRIEVER | GENERATOR,
    "prompt.template": {"build_sft"} | GENERATOR | QUESTIONS,
    "prompt.system": {"build_sft", "distill_cot"} | GENERATOR | QUESTIONS,
    "llm.revision": {"download@llm"} | GENERATOR,
    "embedder.batch_size": {"build_chunks"} | QUESTIONS,  # chunks are sized in the embedder's tokens
    "build_embed_negatives.num_negatives": {"build_embed_negatives"} | RETRIEVER,
    "build_embed_negatives.train_on": {"build_embed_negatives"} | RETRIEVER,  # the questions are not asked again
    "own.chunks.size": {"build_chunks"} | QUESTIONS,
    "own.questions.prompts.en": QUESTIONS,  # a changed teacher prompt: the questions again, not the chunks
    "own.pairs.columns.query": {"build_pairs"},  # no stage reads its rows until build_embed_negatives.source does
    "build_sft.seed": {"build_sft"} | GENERATOR,
    "distill_cot.max_rounds": {"distill_cot"} | GENERATOR,
    "distill_cot.teacher.revision": {"download@teacher", "distill_cot"} | GENERATOR | QUESTIONS,
    "train_embed.learning_rate": RETRIEVER,
    "train_llm.learning_rate": GENERATOR,
    "train_rerank.learning_rate": {"train_rerank"} | RERANKED,
    "reranker.max_len": {"train_rerank"} | RERANKED,
    "rerank.candidates": RERANKED,
    "rerank.llm.batch_size": RERANKED,  # the LLM rerankers, read where the cross-encoder is
    "serving.concurrency": {"distill_cot"} | GENERATOR | QUESTIONS,
    "serve_infer.retrieval.top_k": {"serve_infer_retrieval", "score_retrieval"},
    "serve_infer.generation.max_tokens": {"serve_infer_generation", "score_generation"},
    "serve_infer.math.max_tokens": {"serve_infer_math", "score_math"},
    "rag.top_k": RAG,
    "rag.no_passage.en": RAG,
    "score.retrieval.similarity_threshold": {"score_retrieval"},
    "score.generation.cosine_embedder.batch_size": {"score_generation", "score_rag"},
    "score.rag.judge.max_tokens": {"score_rag"},
    "assistant.port": set(),  # read by the assistant only, never by a stage
}


def changed_value(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return f"{value}-changed" if isinstance(value, str) else "changed"


def test_every_params_group_reruns_exactly_its_readers_and_their_descendants(dvc_repo, capsys):
    root, env = dvc_repo
    params_file = root / "params.yaml"
    original = params_file.read_text(encoding="utf-8")
    assert {key.split(".")[0] for key in INVALIDATION} == set(yaml.safe_load(original)), "a params group is missing"
    started = time.monotonic()
    assert stages_run(run(["dvc", "repro"], root, env)) == set()  # nothing changed: nothing runs
    noop_s = time.monotonic() - started
    try:
        for dotted, expected in INVALIDATION.items():
            value = yaml.safe_load(original)
            for key in dotted.split("."):
                value = value[key]
            set_params(params_file, [(dotted, changed_value(value))])
            # --force-downstream: a dry run cannot change the upstream outputs, so it would not show the
            # descendants a real run re-runs; this asks DVC for them (the real runs above show they do run)
            dry = run(["dvc", "repro", "--dry", "--force-downstream"], root, env)
            assert stages_run(dry) == expected, (dotted, stages_run(dry) ^ expected)
            params_file.write_text(original, encoding="utf-8")
    finally:
        params_file.write_text(original, encoding="utf-8")
    with capsys.disabled():
        print(f"\nno-op dvc repro of the demo DAG ({len(ALL_STAGES)} stages): {noop_s:.1f} s")


@pytest.fixture(scope="module")
def remotes(dvc_repo, tmp_path_factory) -> tuple[Path, Path]:
    """A local directory as the DVC remote and a bare git repository as `origin`, with the demo pushed to both."""
    root, env = dvc_repo
    storage, origin = tmp_path_factory.mktemp("dvc-remote"), tmp_path_factory.mktemp("origin") / "repo.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], root, env)
    run(["git", "remote", "add", "origin", str(origin)], root, env)
    run(["dvc", "remote", "add", "--default", "storage", str(storage)], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "demo baseline, with its DVC remote"], root, env)
    run(["dvc", "push", "--run-cache"], root, env)
    run(["git", "push", "-q", "origin", "main"], root, env)
    return storage, origin


def out_files(root: Path) -> dict[str, bytes]:
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    paths = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    files = {}
    for rel in paths:
        target = root / rel
        for f in sorted(target.rglob("*") if target.is_dir() else [target]):
            if f.is_file():
                files[str(f.relative_to(root))] = f.read_bytes()
    return files


def test_push_then_pull_into_a_fresh_clone_gives_identical_outputs(dvc_repo, remotes, tmp_path):
    root, env = dvc_repo
    _, origin = remotes
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert not (clone / "models" / "embedder").exists()
    run(["dvc", "pull"], clone, env)
    theirs, ours = out_files(clone), out_files(root)
    assert theirs.keys() == ours.keys() and len(ours) > 20
    assert [f for f in ours if theirs[f] != ours[f]] == []
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone, env)
    # the models are registry artifacts: GTO versions and promotes one (git tags), and one command then
    # fetches that version from the DVC remote without a clone
    run(["gto", "register", "embedder", "--version", "v0.1.0"], clone, env)
    run(["gto", "assign", "embedder", "--version", "v0.1.0", "--stage", "prod"], clone, env)
    run(["git", "push", "-q", "origin", "--tags"], clone, env)
    got = tmp_path / "got"
    # a file:// URL: a bare path inside another git checkout (CI's temp dir is) would open that checkout
    run(["dvc", "artifacts", "get", origin.as_uri(), "embedder", "--stage", "prod", "-o", str(got)], tmp_path, env)
    assert (got / "model.safetensors").read_bytes() == (root / "models" / "embedder" / "model.safetensors").read_bytes()


def test_sweep_then_an_experiment_pushed_by_the_gpu_script_reaches_a_fresh_clone(dvc_repo, remotes, tmp_path):
    root, env = dvc_repo
    _, origin = remotes
    # a 2-point sweep of the embedder's learning rate on the demo profile: queued, run, shown in < 100 columns
    shown = run([sys.executable, "-m", "raglab.experiments.sweep", "demo", "-S", "train_embed.learning_rate=5e-5,2e-4",
                 "score_retrieval"], root, {**env, "COLUMNS": "100"})
    assert "sweep-1" in shown and "sweep-2" in shown, shown
    table = shown[shown.index("Experiment") - 10:]
    assert max(len(line) for line in table.splitlines()) <= 100 and "train_embed.learning_rate" in table, table
    points = json.loads(run(["dvc", "exp", "show", "--json"], root, env))
    metrics = {}
    for commit in points:
        for exp in commit.get("experiments") or []:
            (rev,) = exp["revs"]
            if exp.get("name", "").startswith("sweep-"):
                data = rev["data"]
                lr = data["params"]["params.yaml"]["data"]["train_embed"]["learning_rate"]
                metrics[exp["name"]] = (lr, {name: data["metrics"][f"metrics/{name}.json"]["data"]
                                             for name in ("retrieval", "train_embed")})
    assert {lr for lr, _ in metrics.values()} == {5e-5, 2e-4}, metrics
    # different results (the demo's tuned retrieval metrics saturate at 1.0, its training loss does not)
    losses = {m["train_embed"]["train_loss"] for _, m in metrics.values()}
    assert len(losses) == 2, metrics

    # the GPU workflow's script, here on the CPU: pull, run, push the experiment to origin and the DVC remote
    run([str(root / ".ci" / "gpu-experiment"), "gpu-run", "-", "-S", "train_embed.learning_rate=2e-4",
         "score_retrieval"], root, {**env, "PYTHON": sys.executable})
    assert "gpu-run" in run(["git", "ls-remote", str(origin), "refs/exps/*"], root, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    run(["dvc", "exp", "pull", "origin", "gpu-run"], clone, env)
    run(["dvc", "exp", "apply", "gpu-run"], clone, env)
    assert yaml.safe_load((clone / "params.yaml").read_text())["train_embed"]["learning_rate"] == 2e-4
    pulled = {name: json.loads((clone / "metrics" / f"{name}.json").read_text()) for name in ("retrieval", "train_embed")}
    assert pulled == metrics["sweep-2" if metrics["sweep-2"][0] == 2e-4 else "sweep-1"][1]  # same point, same run
    assert (clone / "models" / "embedder" / "model.safetensors").is_file()  # outputs came from the DVC remote


def test_plots_page_renders_in_headless_chromium(dvc_repo, tmp_path):
    root, env = dvc_repo
    assert shutil.which("chromium") or shutil.which("chromium-browser"), \
        "headless Chromium is needed: apt-get install chromium (make test does)"
    out = tmp_path / "plots"
    run([sys.executable, "-m", "raglab.experiments.plots", "main", "workspace", "--out", str(out)], root, env)
    from raglab.experiments.plots import screenshot

    png = tmp_path / "plots.png"
    rendered = screenshot(out / "index.html", png)
    assert rendered.errors == []  # no script error
    charts, marks = rendered.charts, rendered.marks  # every plot of dvc.yaml drew its marks
    n_plots = len(yaml.safe_load((root / "dvc.yaml").read_text())["plots"])
    assert charts == n_plots and marks > 10 * n_plots, (charts, marks)
    assert png.stat().st_size > 20_000
