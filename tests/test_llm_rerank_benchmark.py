"""benchmarks/llm_rerank.py: it scores each query once (a second run resumes from --out and scores only the queries
after), its figures come from what --out recorded (the reranked order computed by hand from recorded scores), and
--against compares hit@1 with another system's per-query file by a paired bootstrap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
KB = ["the company sold alpha widgets", "beta revenue grew ten percent", "gamma costs fell", "delta hired staff"]
QUESTIONS = [("what did the company sell", 0), ("how did beta revenue change", 1), ("which costs fell", 2)]


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "llm_rerank.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def split(tmp_path) -> Path:
    folder = tmp_path / "val"
    folder.mkdir()
    (folder / "kb.txt").write_text("\n".join(KB) + "\n", encoding="utf-8")
    (folder / "eval.jsonl").write_text("".join(json.dumps({"query": q, "corpus": [KB[g]]}) + "\n"
                                               for q, g in QUESTIONS), encoding="utf-8")
    return folder


def test_the_benchmark_resumes_and_reranks_from_what_it_recorded(tiny_llm, split, tmp_path):
    out = tmp_path / "scores.jsonl"
    common = ["--llm", tiny_llm, "--eval", str(split), "--candidates", "3", "--out", str(out)]
    run(*common, "--queries", "2")
    first = out.read_text(encoding="utf-8").splitlines()
    assert len(first) == 2

    # hand-made scores for the third query: the LLM's order is the first stage's reversed
    line = json.loads(first[0])
    line.update(query=QUESTIONS[2][0], gold=KB[2], candidates=[3, 1, 2], scores=[-3.0, -2.0, -1.0], s=1.0,
                warm_up=False)
    out.write_text("\n".join(first + [json.dumps(line)]) + "\n", encoding="utf-8")
    printed = run(*common, "--queries", "3", "--keep", "1,3", "--weights", "0")
    assert out.read_text(encoding="utf-8").splitlines()[:2] == first  # nothing scored twice
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3 and lines[2]["candidates"] == [3, 1, 2]
    # the third query: the first stage misses at rank 1 (3), the LLM's order puts the gold (2) first; with one
    # candidate kept only the first stage's first (3) is left to order

    def hit1(order, gold):
        return order[0] == KB.index(gold)

    first_two = [hit1([c for _, c in sorted(zip(x["scores"], x["candidates"]), key=lambda p: -p[0])], x["gold"])
                 for x in lines[:2]]
    top3 = 100 * (sum(first_two) + 1) / 3
    top1 = 100 * (sum(hit1(x["candidates"], x["gold"]) for x in lines[:2])) / 3
    assert f"top 3, first-stage weight 0.0: hit@1 {top3:.2f}" in printed
    assert f"top 1, first-stage weight 0.0: hit@1 {top1:.2f}" in printed

    # --against: another system's per-query hits, the same queries in the same order
    theirs = tmp_path / "test.jsonl"
    theirs.write_text("".join(json.dumps({"query": x["query"], "other": {"hit@1": 0.0}}) + "\n" for x in lines),
                      encoding="utf-8")
    record = tmp_path / "record"
    printed = run(*common, "--queries", "3", "--keep", "3", "--against", f"{theirs}:other", "--record", str(record))
    assert f"against other (0.00): hit@1 +{top3:.2f} [" in printed

    # the record: score_retrieval's layout, the first stage and the last row asked for, the LLM's seconds
    rows = [json.loads(x) for x in (record / "score" / "retrieval" / "val.jsonl").read_text().splitlines()]
    assert [r["query"] for r in rows] == [q for q, _ in QUESTIONS]
    assert rows[2]["bm25"]["hit@1"] == 0.0 and rows[2]["bm25+query_likelihood"]["hit@1"] == 1.0
    assert rows[2]["bm25+query_likelihood"]["rerank_s"] == 1.0
    # the machine: the one that scored --out's lines (its sidecar, written by the first run), under the system's name
    machine = json.loads((record / "machine.json").read_text())
    scored_on = json.loads((tmp_path / "scores.jsonl.machine.json").read_text())
    assert machine["source"] == "measured" and scored_on["shared"] in (True, False)
    assert machine["stages"]["bm25+query_likelihood"]["machine"] == {"source": "measured", **scored_on}

    # another first stage recorded for the same queries stays beside this one; other queries are refused
    recorded = record / "score" / "retrieval" / "val.jsonl"
    recorded.write_text("".join(json.dumps({**r, "tuned": {"hit@1": 1.0}}) + "\n" for r in rows), encoding="utf-8")
    run(*common, "--queries", "3", "--keep", "3", "--record", str(record))
    again = [json.loads(x) for x in recorded.read_text().splitlines()]
    assert [r["tuned"] for r in again] == [{"hit@1": 1.0}] * 3 and again[2]["bm25+query_likelihood"]["hit@1"] == 1.0
    recorded.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]), encoding="utf-8")
    done = subprocess.run([sys.executable, "benchmarks/llm_rerank.py", *common, "--queries", "3", "--record",
                           str(record)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "recorded for other queries" in done.stderr

    other_split = tmp_path / "other"
    other_split.mkdir()
    (other_split / "kb.txt").write_text((split / "kb.txt").read_text())
    (other_split / "eval.jsonl").write_text(json.dumps({"query": "another question", "corpus": [KB[0]]}) + "\n")
    done = subprocess.run([sys.executable, "benchmarks/llm_rerank.py", "--llm", tiny_llm, "--eval", str(other_split),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "its queries are not the first ones" in done.stderr


def test_the_lora_reranker_step_trains_the_adapter_on_groups_of_one_positive_and_its_negatives(tiny_llm, tmp_path):
    """benchmarks/llm_rerank_step.py: FlagEmbedding's decoder-only reranker over the LLM with a LoRA takes its steps
    on ``batch`` queries x ``group`` passages, and says what an epoch over ``queries`` would take."""
    import re

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"question": q, "context": KB[g]}) + "\n" for q, g in QUESTIONS)
                     + json.dumps({"question": "", "context": KB[3]}) + "\n", encoding="utf-8")  # no question: unused
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "llm_rerank_step.py"), "--model", tiny_llm,
                           "--pairs", str(pairs), "--batch", "2", "--group", "3", "--steps", "2", "--lora-rank", "4",
                           "--queries", "10"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    head, line = done.stdout.strip().splitlines()[-2:]
    assert "LoRA rank 4, every linear layer); 2 queries x 3 passages a step" in head
    trainable = int(re.search(r"([\d,]+) trainable", head).group(1).replace(",", ""))
    assert 0 < trainable < float(re.search(r"(\d+)M parameters", head).group(1)) * 1e6
    step = re.fullmatch(r"fp32: median ([\d.]+) s/step over 2 steps \(([\d.]+) tokens a step, loss ([\d.]+)\); one "
                        r"epoch over 10 queries = 5 steps = ([\d.]+) h", line)
    assert step and float(step.group(2)) > 0 and float(step.group(3)) > 0


def test_the_benchmark_reads_the_rag_systems_questions_and_compares_with_a_score_rag_file(tiny_llm, tmp_path):
    """build_sft's eval split (eval/test.jsonl, its knowledge base test_kb.jsonl beside it) is read as the RAG
    system reads it; --against takes score_rag's per-system file (rows of `question` and the figures, the system
    named by the file); the record is written under the split's name; a row without a question is named."""
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "test_kb.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(KB)),
                                          encoding="utf-8")
    rows = [{"id": f"Q{i}", "question": q, "context": KB[g], "answers": "x"} for i, (q, g) in enumerate(QUESTIONS)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    theirs = tmp_path / "bm25.jsonl"   # score_rag's retrieval/bm25.jsonl: hit@1 0 on every question
    theirs.write_text("".join(json.dumps({"id": r["id"], "question": r["question"], "hit@1": 0.0}) + "\n"
                              for r in rows), encoding="utf-8")
    out, record = tmp_path / "scores.jsonl", tmp_path / "record"
    printed = run("--llm", tiny_llm, "--eval", str(folder / "test.jsonl"), "--candidates", "4", "--queries", "0",
                  "--out", str(out), "--against", str(theirs), "--record", str(record))
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["query"] for x in lines] == [q for q, _ in QUESTIONS] and [x["gold"] for x in lines] == [
        KB[g] for _, g in QUESTIONS]
    assert all(x["candidates"] and set(x["candidates"]) <= {0, 1, 2, 3} for x in lines)  # indices into test_kb
    # the last row (all four kept, no fusion) is the LLM's order: a hit where the gold scored highest
    hits = [KB[max(zip(x["scores"], x["candidates"]))[1]] == x["gold"] for x in lines]
    assert f"against bm25 (0.00): hit@1 +{100 * sum(hits) / 3:.2f} [" in printed
    recorded = [json.loads(x) for x in (record / "score" / "retrieval" / "test.jsonl").read_text().splitlines()]
    assert [r["query"] for r in recorded] == [q for q, _ in QUESTIONS]

    (folder / "test.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps({"id": "Q1", "context": KB[1]}) + "\n",
                                       encoding="utf-8")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "llm_rerank.py"), "--llm", tiny_llm, "--eval",
                           str(folder / "test.jsonl")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and f"{folder / 'test.jsonl'}, row 2, field 'question': missing" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_benchmark_scores_through_vllm_as_in_process(tiny_llm, split, tmp_path):
    """--vllm: a vLLM server started on --llm for the run scores by its prompt logprobs what transformers scores in
    this process (same candidates; the same log-probabilities up to the engines' float32 arithmetic), and each line
    names the engine that scored it; the server is gone after the run."""
    common = ["--llm", tiny_llm, "--eval", str(split), "--candidates", "3", "--queries", "2", "--precision", "fp32"]
    run(*common, "--out", str(tmp_path / "local.jsonl"))
    printed = run(*common, "--out", str(tmp_path / "vllm.jsonl"), "--vllm", "--set", "serving.enforce_eager=true",
                  "--set", "serving.max_model_len=1024")
    assert "vLLM float32" in printed
    local, served = ([json.loads(x) for x in (tmp_path / name).read_text(encoding="utf-8").splitlines()]
                     for name in ("local.jsonl", "vllm.jsonl"))
    assert [x["engine"] for x in local + served] == ["transformers fp32"] * 2 + ["vLLM float32"] * 2
    for a, b in zip(local, served):
        assert a["candidates"] == b["candidates"]
        assert b["scores"] == pytest.approx(a["scores"], abs=0.02)
    assert not [p for p in psutil.process_iter(["cmdline"]) if tiny_llm in (p.info["cmdline"] or [])
                and "vllm.entrypoints.openai.api_server" in p.info["cmdline"]]
