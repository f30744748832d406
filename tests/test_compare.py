"""The metrics diff for pull requests: two git revisions of DVC-tracked per-query scores, one delta beyond
the noise and one within it, and the Markdown table that says which is which."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from raglab.compare import compare, markdown, paired_bootstrap, per_query_scores, revision_reader


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


def write_scores(root: Path, recall: list[int], em: list[int]) -> None:
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


def test_two_revisions_give_a_table_with_a_flagged_delta_and_a_noise_delta(tmp_path):
    def sh(*cmd):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True,
                       env={**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})

    dvc = str(Path(sys.executable).parent / "dvc")
    sh("git", "init", "-q", "-b", "main")
    sh(dvc, "init", "-q")
    rng = np.random.default_rng(7)
    recall = (rng.random(700) < 0.81).astype(int)
    em = (rng.random(400) < 0.40).astype(int)
    write_scores(tmp_path, recall.tolist(), em.tolist())
    sh(dvc, "add", "-q", "data/score")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "base")
    # head: context recall +10 points (70 queries fixed), EM +0.5 points (2 of 400 questions): noise
    recall2, em2 = recall.copy(), em.copy()
    recall2[np.flatnonzero(recall == 0)[:70]] = 1
    em2[np.flatnonzero(em == 0)[:4]] = 1
    em2[np.flatnonzero(em == 1)[:2]] = 0
    write_scores(tmp_path, recall2.tolist(), em2.tolist())
    sh(dvc, "add", "-q", "data/score")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "head")

    old = per_query_scores(*revision_reader("HEAD~1", str(tmp_path)))
    new = per_query_scores(*revision_reader("HEAD", str(tmp_path)))
    rows = {(r.track, r.system, r.metric): r for r in compare(old, new)}
    recall_row, em_row = rows[("retrieval", "tuned", "context_recall")], rows[("generation", "sft", "em")]
    assert abs(recall_row.delta - 0.1) < 1e-12 and recall_row.beyond_noise and recall_row.n == 700
    assert abs(em_row.delta - 0.005) < 1e-12 and not em_row.beyond_noise and em_row.low < 0 < em_row.high
    table = markdown(compare(old, new), "HEAD~1", "HEAD")
    lines = table.splitlines()
    header = lines.index("| metric | track | split | system | base | head | Δ | 95% interval of Δ | n |")
    body = lines[header + 2:header + 2 + len(rows)]
    assert body[0].startswith("| em | generation | test | sft |")  # headline metrics first, in the brief's order
    assert [b.split(" | ")[0] for b in body[:3]] == ["| em", "| cosine", "| origin"]
    assert "| context_recall | retrieval | test | tuned | " in table and "| **+10.00** |" in table
    assert "| +0.50 |" in table  # not bold: within the noise
    assert table.rstrip().endswith("2 of 5 deltas are beyond the noise.")  # recall and hit@1

    out = subprocess.run([sys.executable, "-m", "raglab.compare", "--repo", str(tmp_path), "--base", "HEAD~1"],
                         capture_output=True, text=True, check=True).stdout
    assert out == table


def test_different_eval_sets_are_not_paired():
    old = {("generation", "test", "sft"): {"a": {"em": 1.0}, "b": {"em": 0.0}}}
    new = {("generation", "test", "sft"): {"a": {"em": 1.0}, "c": {"em": 1.0}}}
    (row,) = compare(old, new)
    assert row.low is None and "not paired" in row.note
    (only,) = compare({}, new)
    assert only.note == "only in head"
