"""The metrics diff for pull requests: two git revisions of DVC-tracked per-query scores, one delta beyond
the noise and one within it, and the Markdown table that says which is which."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from raglab.evaluation.intervals import bootstrap_means, cluster_of, mean_interval, paired_bootstrap
from raglab.experiments.compare import compare, per_query_scores, report, revision_reader


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    old = rng.integers(0, 2, 700).astype(float)
    same = paired_bootstrap(old, old)
    assert same == (0.0, 0.0)
    better = old.copy()
    better[np.flatnonzero(old == 0)[:70]] = 1  # 70 of 700 queries fixed, none broken: +10 points
    low, high = paired_bootstrap(old, better)
    assert 0.07 < low < 0.1 < high < 0.13
    assert paired_bootstrap(old, better, seed=1) != (low, high) and paired_bootstrap(old, better) == (low, high)


def test_cluster_bootstrap_is_wider_on_clustered_data_and_equal_on_unclustered():
    rng = np.random.default_rng(0)
    # 100 passages of 5 questions each; a passage is answered all right or all wrong (perfectly clustered)
    passage_right = rng.integers(0, 2, 100).astype(float)
    values = np.repeat(passage_right, 5)
    ids = [f"DEV_{p}_QUERY_{q}" for p in range(100) for q in range(5)]
    clusters = [cluster_of(i) for i in ids]
    assert clusters[:6] == ["DEV_0"] * 5 + ["DEV_1"] and cluster_of("q7|what?") == "q7|what?"
    iid_low, iid_high = mean_interval(values)
    low, high = mean_interval(values, clusters)
    assert low < values.mean() < high
    # the i.i.d. interval acts as if there were 500 independent answers, there are 100: about sqrt(5) wider
    assert 1.8 < (high - low) / (iid_high - iid_low) < 2.8
    # no clusters (every key its own): the plain bootstrap, draw for draw
    unclustered = [f"q{i}" for i in range(500)]
    assert np.array_equal(bootstrap_means(values, unclustered), bootstrap_means(values))
    # clusters of one question each that still look like CMRC ids: the same interval
    assert mean_interval(values, [f"DEV_{i}_QUERY_0" for i in range(500)]) == mean_interval(values)
    # a paired difference resampled by passage, as compare does
    better = values.copy()
    better[:50] = 1  # the first 10 passages fixed
    assert paired_bootstrap(values, better, clusters) != paired_bootstrap(values, better)


def write_scores(root: Path, recall: list[int], em: list[int], origin: list[int]) -> None:
    """The pipeline's per-query scores (data/score, DVC outputs) and a recorded run's (results/rec, in git)."""
    retrieval = root / "data" / "score" / "retrieval"
    retrieval.mkdir(parents=True, exist_ok=True)
    (retrieval / "test.jsonl").write_text("".join(
        json.dumps({"query": f"q{i}", "gold": "g", "tuned": {"context_recall": r, "hit@1": r}}) + "\n"
        for i, r in enumerate(recall)))
    generation = root / "data" / "score" / "generation" / "test"
    generation.mkdir(parents=True, exist_ok=True)
    (generation / "sft.jsonl").write_text("".join(
        json.dumps({"id": f"c{i}", "question": "问", "gold": "答", "prediction": "答", "em": e, "cosine": 0.5 + e / 4,
                    "origin": 1}) + "\n" for i, e in enumerate(em)))
    record = root / "results" / "rec"
    (record / "score" / "generation" / "test").mkdir(parents=True, exist_ok=True)
    (record / "score" / "generation" / "test" / "sft.jsonl").write_text("".join(
        json.dumps({"id": f"r{i}", "question": "问", "gold": "答", "prediction": "答", "em": 0, "cosine": 0.5,
                    "origin": o}) + "\n" for i, o in enumerate(origin)))
    (record / "metrics").mkdir(exist_ok=True)
    metrics = {"test": {"sft": {"origin": float(np.mean(origin))}}}
    (record / "metrics" / "generation.json").write_text(json.dumps(metrics))


def test_two_revisions_give_a_report_with_a_flagged_delta_and_a_noise_delta(tmp_path):
    def sh(*cmd):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True,
                       env={**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})

    dvc = str(Path(sys.executable).parent / "dvc")
    sh("git", "init", "-q", "-b", "main")
    sh(dvc, "init", "-q")
    (tmp_path / "params.yaml").write_text("train_embed:\n  learning_rate: 1.0e-5\n")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - results/rec/metrics\n")
    rng = np.random.default_rng(7)
    recall = (rng.random(700) < 0.81).astype(int)
    em = (rng.random(400) < 0.40).astype(int)
    origin = (rng.random(300) < 0.90).astype(int)
    write_scores(tmp_path, recall.tolist(), em.tolist(), origin.tolist())
    sh(dvc, "add", "-q", "data/score")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "base")
    # head: context recall +10 points (70 queries fixed), EM +0.5 points (2 of 400 questions): noise;
    # the recorded run's origin -5 points (15 of 300 broken)
    recall2, em2, origin2 = recall.copy(), em.copy(), origin.copy()
    recall2[np.flatnonzero(recall == 0)[:70]] = 1
    em2[np.flatnonzero(em == 0)[:4]] = 1
    em2[np.flatnonzero(em == 1)[:2]] = 0
    origin2[np.flatnonzero(origin == 1)[:15]] = 0
    write_scores(tmp_path, recall2.tolist(), em2.tolist(), origin2.tolist())
    (tmp_path / "params.yaml").write_text("train_embed:\n  learning_rate: 2.0e-5\n")
    sh(dvc, "add", "-q", "data/score")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "head")

    old = per_query_scores(*revision_reader("HEAD~1", str(tmp_path)))
    new = per_query_scores(*revision_reader("HEAD", str(tmp_path)))
    rows = {(r.run, r.track, r.system, r.metric): r for r in compare(old, new)}
    recall_row = rows[("pipeline", "retrieval", "tuned", "context_recall")]
    em_row = rows[("pipeline", "generation", "sft", "em")]
    assert abs(recall_row.delta - 0.1) < 1e-12 and recall_row.beyond_noise and recall_row.n == 700
    assert abs(em_row.delta - 0.005) < 1e-12 and not em_row.beyond_noise and em_row.low < 0 < em_row.high
    origin_row = rows[("rec", "generation", "sft", "origin")]
    assert abs(origin_row.delta + 0.05) < 1e-12 and origin_row.beyond_noise and origin_row.high < 0

    text = report("HEAD~1", "HEAD", str(tmp_path))
    lines = text.splitlines()
    # the parameters changed come first, from dvc params diff
    assert lines[0] == "## Parameters: `HEAD` vs `HEAD~1`"
    assert any("train_embed.learning_rate" in line and "1e-05" in line and "2e-05" in line for line in lines[:6])
    header = lines.index("| metric | run | track | split | system | base | head | Δ | 95% interval of Δ | n |")
    body = lines[header + 2:lines.index("", header)]
    # headline metrics first, in the brief's order; one line per system; signed deltas
    order = list(dict.fromkeys(b.split(" | ")[0].removeprefix("| ") for b in body))
    assert order == ["em", "cosine", "origin", "context_recall", "hit@1"]
    (em_line,) = [line for line in body if line.startswith("| em | pipeline | generation | test | sft |")]
    assert "| +0.50 | [-" in em_line  # not bold: within the noise
    assert "| context_recall | pipeline | retrieval | test | tuned | " in text and "| **+10.00** |" in text
    assert "| origin | rec | generation | test | sft | " in text and "| **-5.00** |" in text
    # unchanged metrics (pipeline origin, the record's EM and cosine) are counted, not listed
    assert "| origin | pipeline |" not in text and "| em | rec |" not in text
    assert "3 metrics with identical per-query scores in both revisions are not listed" in text
    # and dvc metrics diff of every metrics file, the recorded run's included
    assert "<details><summary>dvc metrics diff" in text and "results/rec/metrics/generation.json" in text


def test_rag_scores_are_read_per_retriever_and_per_system():
    from raglab.experiments.compare import scores_under

    files = {
        "s/rag/test/retrieval/bm25.jsonl": '{"id": "q1", "question": "?", "gold_rank": 2, "hit@1": 0.0, "hit@3": 1.0}\n',
        "s/rag/test/bm25+sft.jsonl": '{"id": "q1", "question": "?", "gold": "a", "prediction": "a", "em": 1.0, '
                                     '"cosine": 1.0, "origin": 1.0, "origin_gold": 1.0, "faithfulness": null}\n',
    }

    def listdir(path: str) -> list[str]:
        return sorted({f[len(path) + 1:].split("/")[0] for f in files if f.startswith(path + "/")})

    scores = scores_under("s", files.get, listdir)
    assert scores == {("rag retrieval", "test", "bm25"): {"q1": {"hit@1": 0.0, "hit@3": 1.0}},
                      ("rag", "test", "bm25+sft"): {"q1": {"em": 1.0, "cosine": 1.0, "origin": 1.0, "origin_gold": 1.0}}}


def test_baseline_rows_per_run_with_n_and_intervals(tmp_path):
    from raglab.experiments.baseline import render, tables, workspace_reader

    write_scores(tmp_path, recall=[1, 0] * 10, em=[1, 1, 0, 0] * 5, origin=[1] * 20)
    shown = tables(per_query_scores(*workspace_reader(str(tmp_path))), resamples=200)
    header, rows = shown["generation"]
    assert header == ["run", "split", "system", "n", "em", "cosine", "origin"]
    assert [r[:4] for r in rows] == [["pipeline", "test", "sft", "20"], ["rec", "test", "sft", "20"]]
    assert rows[0][4].startswith("50.00 ±") and rows[1][6] == "100.00 ±0.00"
    assert list(shown) == ["retrieval", "generation"]
    text = render(shown, markdown=False)
    assert max(map(len, text.splitlines())) < 100 and "| run |" in render(shown, markdown=True)


def test_two_systems_of_one_revision_are_paired_on_the_same_questions():
    """CoT − untuned within a record and CoT − answers-only across records, each with its paired interval."""
    import click
    import pytest

    from raglab.experiments.compare import system_pairs

    questions = [f"{i}|q{i}" for i in range(60)]
    def math(correct: set[int]) -> dict:
        return {q: {"accuracy": float(i in correct)} for i, q in enumerate(questions)}
    scores = {("cot", "math", "eval", "base"): math(set(range(10))),
              ("cot", "math", "eval", "sft"): math(set(range(40))),       # 30 more right, none lost: beyond noise
              ("answers", "math", "eval", "sft"): math(set(range(39)))}  # one question apart: noise
    rows = {r.system: r for r in system_pairs(scores, [("cot/math/eval/sft", "cot/math/eval/base"),
                                                       ("cot/math/eval/sft", "answers/math/eval/sft")])}
    untuned, answers = rows["sft − cot/base"], rows["sft − answers/sft"]
    assert untuned.delta == pytest.approx(0.5) and untuned.beyond_noise and untuned.n == 60
    assert answers.delta == pytest.approx(1 / 60) and not answers.beyond_noise
    with pytest.raises(click.BadParameter, match="not RUN/TRACK/SPLIT/SYSTEM"):
        system_pairs(scores, [("cot/math/eval/sft", "cot/math/base")])
