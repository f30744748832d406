"""The teacher's replies outlive a machine: exported from one response cache to a compressed JSON Lines file,
imported into another, and a distillation re-run on a fresh machine with that file asks the teacher nothing."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from fake_openai import FakeOpenAI
from test_distill import REPO, run_stage, stage_inputs, stage_params, teacher_70

from raglab.serving.cache import ResponseCache, export_replies, import_replies
from raglab.serving.types import Reply, Request, Sampling


def filled_cache(path, identity: str, n: int, other: str = "other-system") -> ResponseCache:
    cache = ResponseCache(path)
    sampling = Sampling(64, 0.6)
    for i in range(n):
        for who in (identity, other):
            request = Request([{"role": "user", "content": f"问题 {i}: what is {i} + {i}?"}], sample=i % 3, seed=7 + i)
            cache.put(Reply(content=f"\\boxed{{{2 * i}}}", reasoning="想一想", completion_tokens=i),
                      cache.request_fields(who, request, sampling))
    return cache


def test_export_then_import_loses_and_duplicates_nothing(tmp_path):
    source = filled_cache(tmp_path / "a.sqlite", "teacher-x", 25)
    file = tmp_path / "replies" / "teacher-x.jsonl.gz"
    assert export_replies(source, "teacher-x", file) == 25
    first = file.read_bytes()
    assert export_replies(source, "teacher-x", file) == 25 and file.read_bytes() == first  # byte-stable
    lines = gzip.decompress(first).decode().splitlines()
    assert len(lines) == len(set(lines)) == 25 and all(json.loads(line)["identity"] == "teacher-x" for line in lines)

    target = ResponseCache(tmp_path / "b.sqlite")
    assert import_replies(target, file) == {"added": 25, "present": 0, "other": 0}
    assert import_replies(target, file) == {"added": 0, "present": 25, "other": 0}  # a second import adds nothing
    assert target.entries("teacher-x") == source.entries("teacher-x")  # same keys, requests and replies
    reply = target.get(source.entries("teacher-x")[0]["key"])
    assert reply is not None and reply.cached and reply.reasoning == "想一想"
    assert import_replies(ResponseCache(tmp_path / "c.sqlite"), file, identity="teacher-y") == \
        {"added": 0, "present": 0, "other": 25}


def test_a_damaged_replies_file_is_named_in_the_error(tmp_path):
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"identity": "t"}\nnot json\n'))
    with pytest.raises(ValueError, match=r"bad.jsonl.gz: line 2: not JSON"):
        import_replies(ResponseCache(tmp_path / "c.sqlite"), bad)
    bad.write_bytes(gzip.compress(b'{"identity": "t"}\n'))
    with pytest.raises(ValueError, match=r"bad.jsonl.gz: entry 1: not an exported reply"):
        import_replies(ResponseCache(tmp_path / "c.sqlite"), bad)
    bad.write_text("plain text")
    with pytest.raises(ValueError, match="not a gzip-compressed JSON Lines file"):
        import_replies(ResponseCache(tmp_path / "c.sqlite"), bad)


def test_a_fresh_machine_with_the_replies_file_asks_the_teacher_nothing(tmp_path):
    raw, teacher = stage_inputs(tmp_path, 30)
    with FakeOpenAI(teacher_70) as fake:
        params = stage_params(tmp_path, fake.base_url, max_rounds=3)
        assert run_stage(tmp_path, params, raw, teacher, tmp_path / "first").wait(120) == 0
        asked = len(fake.requests)
        env = {**os.environ, "RAGLAB_CACHE": str(tmp_path / "cache")}
        export = subprocess.run([sys.executable, "-m", "raglab.generator.teacher", "export",
                                 str(tmp_path / "replies" / "teacher.jsonl.gz"), "--params", str(params),
                                 "--teacher", str(teacher)], cwd=REPO, env=env, capture_output=True, text=True)
        assert export.returncode == 0, export.stderr[-2000:]
        assert f"{asked} replies" in export.stdout
        (tmp_path / "cache" / "responses.sqlite").unlink()  # another machine: an empty response cache
        assert run_stage(tmp_path, params, raw, teacher, tmp_path / "second").wait(120) == 0
        assert len(fake.requests) == asked  # zero teacher requests
    report = json.loads((tmp_path / "second" / "report.json").read_text())
    assert report["imported_replies"] == {"teacher.jsonl.gz": {"added": asked, "present": 0, "other": 0}}
    assert report["usage"]["this_run"]["requests"] == 0
    for name in ("kept.jsonl", "failed.jsonl", "train.jsonl"):
        assert (tmp_path / "second" / name).read_text() == (tmp_path / "first" / name).read_text()
