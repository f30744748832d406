"""Distillation against a scripted OpenAI-compatible teacher (tests/fake_openai.py): the client's retries,
usage and concurrency, the rounds, the records, and a kill at a random point followed by a re-run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from fake_openai import Action, FakeOpenAI, user_text

from raglab.core.prompts import chat_messages, render_question
from raglab.generator.distill import Question, distill, question_messages, solution_text, training_record
from raglab.serving.cache import ResponseCache
from raglab.serving.client import Endpoint, Reply, Request, Sampling, chat_many

REPO = Path(__file__).resolve().parents[1]
PROMPT = "{question}\nPut the answer in \\boxed{}."


def questions(n: int) -> list[Question]:
    return [Question(f"train-{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(1, n + 1)]


def gold_of(request: dict) -> int:
    return 2 * int(user_text(request).split("What is ")[1].split(" +")[0])


def right_on(request: dict, p_right: float = 0.7) -> bool:
    """A deterministic coin per (question, sampling seed): the same request always gets the same verdict."""
    digest = hashlib.sha256(f"{user_text(request)}|{request.get('seed')}".encode()).digest()
    return digest[0] / 256 < p_right


def teacher_70(request: dict) -> Action:
    gold = gold_of(request)
    answer = gold if right_on(request) else gold + 1
    return Action(content=f"{gold // 2} + {gold // 2} = {answer}. \\boxed{{{answer}}}")


def ask_with(endpoint: Endpoint, cache=None, concurrency=8, max_retries=2):
    sampling = Sampling(64, 0.6)
    return lambda requests, round_no: chat_many(endpoint, requests, sampling, concurrency=concurrency,
                                                timeout_s=5, max_retries=max_retries, cache=cache)


def test_client_retries_transient_failures_and_records_usage():
    calls: dict[str, int] = {}

    def script(request):
        text = user_text(request)
        calls[text] = calls.get(text, 0) + 1
        first = calls[text] == 1
        if text == "500 once" and first:
            return Action(status=500)
        if text == "429 once" and first:
            return Action(status=429, retry_after="0.1")
        if text == "drop once" and first:
            return Action(drop=True)
        if text == "always 503":
            return Action(status=503)
        if text == "malformed":
            return Action(malformed=True)
        if text == "reasoning field":
            return Action(content="\\boxed{4}", reasoning="2 + 2 = 4")
        if text == "inline think":
            return Action(content="<think>\n2 + 2 = 4\n</think>\n\n\\boxed{4}")
        return Action(content="ok", prompt_tokens=7, completion_tokens=3)

    texts = ["500 once", "429 once", "drop once", "always 503", "malformed", "reasoning field", "inline think", "plain"]
    with FakeOpenAI(script) as fake:
        replies = chat_many(Endpoint(fake.base_url, "teacher"), [Request([{"role": "user", "content": t}]) for t in texts],
                            Sampling(16), concurrency=4, timeout_s=5, max_retries=2)
    got = dict(zip(texts, replies))
    for t in ("500 once", "429 once", "drop once", "plain"):
        assert got[t].ok and got[t].content == "ok", (t, got[t])
        assert calls[t] == (1 if t == "plain" else 2), t  # retried exactly once
    assert calls["always 503"] == 3 and "503" in got["always 503"].error  # 1 + max_retries, then given up
    assert not got["malformed"].ok
    assert (got["reasoning field"].content, got["reasoning field"].reasoning) == ("\\boxed{4}", "2 + 2 = 4")
    assert (got["inline think"].content, got["inline think"].reasoning) == ("\\boxed{4}", "2 + 2 = 4")
    assert (got["plain"].prompt_tokens, got["plain"].completion_tokens) == (7, 3)


def test_requests_really_overlap_up_to_the_concurrency_bound():
    with FakeOpenAI(lambda r: Action(content="ok", delay_s=0.2)) as fake:
        chat_many(Endpoint(fake.base_url, "m"), [Request([{"role": "user", "content": str(i)}]) for i in range(24)],
                  Sampling(8), concurrency=6)
    assert 2 <= fake.max_in_flight <= 6  # several at once, never more than asked


def test_rounds_reach_99_percent_with_a_70_percent_teacher_and_lose_nothing():
    qs = questions(200)
    with FakeOpenAI(teacher_70) as fake:
        outcome = distill(qs, question_messages(PROMPT, "sys"), ask_with(Endpoint(fake.base_url, "t")), 15, seed=1)
    assert len(outcome.kept) >= 198
    assert outcome.rounds_used <= 15
    # every request is accounted for: one attempt per (question, round) it was still open in
    assert sum(len(a) for a in outcome.attempts.values()) == len(fake.requests) == sum(outcome.statuses.values())
    assert set(outcome.kept) <= {q.id for q in qs}
    for q in qs:
        attempts = outcome.attempts[q.id]
        assert [a["round"] for a in attempts] == list(range(len(attempts)))
        assert (attempts[-1]["status"] == "correct") == (q.id in outcome.kept)
        assert all(a["status"] == "wrong" for a in attempts[:-1])
    seeds = {(user_text(r), r["seed"]) for r in fake.requests}
    assert len(seeds) == len(fake.requests)  # round r of a question is sent once, with seed 1 + r


def test_failed_attempts_are_classified():
    def script(request):
        n = int(user_text(request).split("What is ")[1].split(" +")[0])
        return [Action(content="no box here"), Action(content=""), Action(status=500),
                Action(content="\\boxed{-1}")][n % 4]

    qs = questions(8)
    with FakeOpenAI(script) as fake:
        outcome = distill(qs, question_messages(PROMPT, "sys"), ask_with(Endpoint(fake.base_url, "t"), max_retries=0),
                          2, seed=0)
    assert outcome.kept == {}
    assert outcome.statuses == {"no_boxed": 4, "empty": 4, "request_error": 4, "wrong": 4}


def test_records_in_the_brief_form():
    q = Question("train-1", "What is 2 + 2?", "4")
    separate = Reply(content="So \\boxed{4}.", reasoning="2 + 2 = 4")
    inline_free = Reply(content="2 + 2 = 4, so \\boxed{4}")
    assert solution_text(separate, "4", "cot") == "<think>\n2 + 2 = 4\n</think>\n\nSo \\boxed{4}."
    assert solution_text(separate, "4", "answer_only") == "<think>\n\n</think>\n\nSo \\boxed{4}."
    assert solution_text(inline_free, "4", "cot") == \
        "<think>\n2 + 2 = 4, so \\boxed{4}\n</think>\n\nThe final answer is $\\boxed{4}$."
    record = training_record(q, separate, "4", PROMPT, "sys", "cot")
    assert record["instruction"] == "What is 2 + 2?\nPut the answer in \\boxed{}." and record["input"] == ""
    assert record["system"] == "sys"
    with pytest.raises(ValueError, match="variant"):
        solution_text(separate, "4", "reasoning")


def stage_params(tmp_path: Path, base_url: str, **distill_changes) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["distill_cot"].update({"train_split": "train", "eval_split": "train", "eval_size": 0.1, "max_rounds": 15,
                                  "max_tokens": 64, "prompt": PROMPT, "seed": 1, "replies": str(tmp_path / "replies"),
                                  "teacher": {**params["distill_cot"]["teacher"], "model": "t", "revision": None,
                                              "endpoint": {"base_url": base_url, "api_key_env": "FAKE_TEACHER_KEY"}},
                                  **distill_changes})
    params["serving"].update({"concurrency": 4, "timeout_s": 10, "max_retries": 0})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


def stage_inputs(tmp_path: Path, n: int) -> tuple[Path, Path]:
    raw = tmp_path / "raw" / "gsm8k"
    raw.mkdir(parents=True)
    raw.joinpath("train.jsonl").write_text("".join(
        json.dumps({"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}) + "\n"
        for i in range(1, n + 1)))
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "source.json").write_text('{"kind": "endpoint"}')
    return raw, teacher


def run_stage(tmp_path: Path, params: Path, raw: Path, teacher: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "RAGLAB_CACHE": str(tmp_path / "cache"), "FAKE_TEACHER_KEY": "sk-fake"}
    cmd = [sys.executable, "-m", "stages.distill_cot", "--params", str(params), "--source", str(raw),
           "--teacher", str(teacher), "--out", str(out)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_kill_at_a_random_point_then_rerun_asks_exactly_for_the_missing_replies(tmp_path):
    raw, teacher = stage_inputs(tmp_path, 60)
    kill_after = random.Random().randint(5, 60)  # a random point of the first run (about 75 requests in all)
    killed = threading.Event()

    with FakeOpenAI(teacher_70) as fake:
        params = stage_params(tmp_path, fake.base_url)
        fake.after_request = lambda count: killed.set() if count >= kill_after else None
        first = run_stage(tmp_path, params, raw, teacher, tmp_path / "out")
        assert killed.wait(120), first.stderr.read()
        first.send_signal(signal.SIGKILL)
        first.wait()
        fake.after_request = None
        first_requests = len(fake.requests)

        cfg = yaml.safe_load(params.read_text())["distill_cot"]
        identity = f"{fake.base_url}|t"
        sampling = Sampling(cfg["max_tokens"], cfg["temperature"])
        system = yaml.safe_load(params.read_text())["prompt"]["system"]
        eval_file = tmp_path / "out" / "eval.jsonl"
        assert eval_file.is_file(), "the eval set is written before the teacher is asked"
        eval_texts = {json.loads(line)["question"] for line in eval_file.read_text().splitlines()}
        # every request a complete run sends: round r of each training question until the coin says right
        needed = []
        for i in range(1, 61):
            text = f"What is {i} + {i}?"
            for r in range(cfg["max_rounds"] if text not in eval_texts else 0):
                needed.append(Request(chat_messages(system, render_question(PROMPT, text)), sample=r, seed=1 + r))
                if right_on({"messages": needed[-1].messages, "seed": 1 + r}):
                    break
        cache = ResponseCache(tmp_path / "cache" / "responses.sqlite")
        in_cache = [cache.get(cache.key(identity, r, sampling)) is not None for r in needed]
        cache.close()
        missing = [(r.messages[-1]["content"], r.seed) for r, hit in zip(needed, in_cache) if not hit]

        second = run_stage(tmp_path, params, raw, teacher, tmp_path / "out")
        assert second.wait(120) == 0, second.stderr.read()
        resent = [(user_text(r), r["seed"]) for r in fake.requests[first_requests:]]

    assert 0 < sum(in_cache) < len(needed)  # the kill fell inside the run
    assert sorted(resent) == sorted(missing)  # exactly the missing replies, each once
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    kept = [json.loads(line) for line in (tmp_path / "out" / "kept.jsonl").read_text().splitlines()]
    failed = (tmp_path / "out" / "failed.jsonl").read_text().splitlines()
    assert len({k["id"] for k in kept}) == len(kept) == report["kept"] == len(kept)
    assert len(kept) + len(failed) == report["questions"] == 60 - len(eval_texts)
    assert report["usage"]["all"]["requests"] == len(needed)
    assert report["usage"]["this_run"]["requests"] == len(missing)
    assert report["usage"]["all"]["completion_tokens"] == 20 * len(needed)


def test_a_teacher_that_is_always_wrong_keeps_nothing_and_says_so(tmp_path):
    raw, teacher = stage_inputs(tmp_path, 12)
    with FakeOpenAI(lambda r: Action(content="\\boxed{-1}")) as fake:
        params = stage_params(tmp_path, fake.base_url, max_rounds=3)
        assert run_stage(tmp_path, params, raw, teacher, tmp_path / "out").wait(60) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["kept"] == 0 and report["failed_by_last_reason"] == {"wrong": report["questions"]}
    assert report["rounds_used"] == 3 and report["wrote"]["train.jsonl"] == 0
    assert (tmp_path / "out" / "train.jsonl").read_text() == ""
    assert report["usage"]["all"]["estimated_cost_usd"] > 0  # priced with the params' per-million prices


def test_a_planted_api_key_reaches_the_server_and_nothing_else(tmp_path):
    """The key goes from its environment variable to the Authorization header, and into no output, report,
    log line, cache entry or parameter file."""
    secret = "sk-planted-7d1e5c0ffee"
    raw, teacher = stage_inputs(tmp_path, 12)
    with FakeOpenAI(teacher_70) as fake:
        params = stage_params(tmp_path, fake.base_url)
        env = {**os.environ, "RAGLAB_CACHE": str(tmp_path / "cache"), "FAKE_TEACHER_KEY": secret,
               "RAGLAB_LOG_LEVEL": "DEBUG"}
        proc = subprocess.run([sys.executable, "-m", "stages.distill_cot", "--params", str(params), "--source", str(raw),
                               "--teacher", str(teacher), "--out", str(tmp_path / "out")],
                              cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {r["auth"] for r in fake.requests} == {f"Bearer {secret}"}
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files) and any(p.name == "report.json" for p in files)
    leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []
