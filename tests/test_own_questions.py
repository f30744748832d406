"""Questions a teacher writes about the user's chunks (raglab.generator.questions, stages/write_questions): the
reply parser on the failures of LlamaIndex's generate_qa_embedding_pairs, the stage against the scripted
OpenAI-compatible teacher (tests/fake_openai.py) with each filter firing once in a known place, the kept pairs
through LlamaIndex's format into build_embed_negatives, a kill and a re-run that asks for no reply twice, and a
re-run on a fresh machine with the exported replies that asks nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fake_openai import Action, FakeOpenAI, user_text

from raglab.core.formats import read_jsonl, write_jsonl
from raglab.data.chunks import Chunk, language
from raglab.generator.questions import parse_reply

REPO = Path(__file__).resolve().parents[1]


# --- the reply parser -------------------------------------------------------------------------------------------

def test_a_preamble_is_never_a_question():
    reply = ("Here are two questions:\n\n1. What revenue did Zephyr Motors report for 2023?\n"
             "2. How many people did Zephyr Motors employ?")
    assert parse_reply(reply, 2, False) == [("What revenue did Zephyr Motors report for 2023?", None),
                                            ("How many people did Zephyr Motors employ?", None)]
    assert parse_reply("Sure! Here are 2 questions based on the passage:\nWhat is the fare?\nI hope this helps!",
                       2, False) == [("What is the fare?", None)]
    assert parse_reply("以下是两个问题：\n渡口几点开船？", 2, False) == [("渡口几点开船？", None)]
    assert parse_reply("I cannot write questions about this passage.", 2, False) == []
    assert parse_reply("", 2, False) == [] and parse_reply("?\n1. ?", 2, False) == []


def test_at_most_per_chunk_questions_however_many_are_written():
    reply = "\n".join(f"{i}. What happened in year {2000 + i}?" for i in range(1, 7))
    assert [q for q, _ in parse_reply(reply, 2, False)] == ["What happened in year 2001?", "What happened in year 2002?"]
    assert len(parse_reply(reply, 5, False)) == 5 and len(parse_reply(reply, 9, False)) == 6


def test_numbering_bullets_and_quotes_are_stripped():
    reply = ("1) What is the fare?\n(b) When does the ferry leave?\n* \"Who sells the tickets?\"\n- **Where is the pier?**\n"
             "• Why does it stop in winter?\nQuestion 3: How long is the crossing?\nQ4. Who owns the boats?\n"
             "1、渡口几点开船？\n问题2：船票在哪里出售？\n“冬天为什么停航？”")
    assert [q for q, _ in parse_reply(reply, 20, False)] == [
        "What is the fare?", "When does the ferry leave?", "Who sells the tickets?", "Where is the pier?",
        "Why does it stop in winter?", "How long is the crossing?", "Who owns the boats?", "渡口几点开船？",
        "船票在哪里出售？", "冬天为什么停航？"]
    # a number that is part of the question stays
    assert parse_reply("2023 revenue of Zephyr Motors: how much was it?", 1, False) == \
        [("2023 revenue of Zephyr Motors: how much was it?", None)]
    # a label echoing the prompt before the question (the 1.5B teacher on Chinese passages) is not part of it
    assert parse_reply("查阅这份文档的人会问：渡口几点开船？\n这段文字能回答的问题：船票在哪里出售？\n"
                       "Two questions: Who owns the boats?", 3, False) == [
        ("渡口几点开船？", None), ("船票在哪里出售？", None), ("Who owns the boats?", None)]


def test_answers_come_from_the_line_after_their_question():
    reply = ("Here you go:\nQ: What is the fare?\nA: two coins\n\n**Q2:** When does the ferry leave?\n**A2:** at six\n"
             "Question: Who sells the tickets?\nAnswer: \"the east pier\"\nQ: Where is the pier?\nIt is east.\nA: east")
    assert parse_reply(reply, 4, True) == [("What is the fare?", "two coins"), ("When does the ferry leave?", "at six"),
                                           ("Who sells the tickets?", "the east pier"), ("Where is the pier?", None)]
    assert parse_reply("问：渡口几点开船？\n答：六点\n问题2：船票在哪里出售？\n答案：码头东侧的小屋", 2, True) == \
        [("渡口几点开船？", "六点"), ("船票在哪里出售？", "码头东侧的小屋")]
    assert parse_reply("Q: What is the fare?\nA: two coins", 2, False) == [("What is the fare?", None)]  # not asked


# --- the stage against the scripted teacher -----------------------------------------------------------------------

def test_questions_that_point_at_their_passage_are_dropped_when_asked():
    """``drop_self_references``: "the passage" / "这段文字" instead of a subject is dropped (``self_reference``), in
    both languages; a phrase that only contains such characters (日本文化) or a question naming its subject stays."""
    from raglab.generator.questions import parse_all
    from raglab.serving.types import Reply

    en, zh = chunk("en", "Harbor Retail opened 48 new stores in 2023."), chunk("zh", "日本文化节在青石镇举行，渡口六点开船。")
    replies = [Reply("What does the passage say about Harbor Retail?\nHow many stores did Harbor Retail open in 2023?"),
               Reply("这段文字主要介绍了什么？\n青石镇的日本文化节在哪里举行？")]
    outcome = parse_all([en, zh], replies, 2, False, drop_self_references=True)
    statuses = {c.question: c.status for c in outcome.candidates}
    assert statuses == {"What does the passage say about Harbor Retail?": "self_reference",
                        "How many stores did Harbor Retail open in 2023?": "kept",
                        "这段文字主要介绍了什么？": "self_reference", "青石镇的日本文化节在哪里举行？": "kept"}
    assert {c.status for c in parse_all([en, zh], replies, 2, False).candidates} == {"kept"}


def chunk(name: str, text: str, source: str = "report.md") -> Chunk:
    return Chunk(f"c-{name}", text, source, 1, 0, len(text), len(text.split()), language(text))


# Each chunk's scripted reply makes one filter fire once (or keeps its questions): the chunks' topics are far
# apart, so which chunk MiniLM ranks first for a question does not hinge on numerics (margins above 0.4).
CHUNKS = [
    chunk("zephyr", "Zephyr Motors reported total revenue of $4.2 billion for fiscal 2023, driven by higher unit "
                    "volumes. Zephyr Motors employed approximately 3,100 people at the end of 2023."),
    chunk("harbor", "Harbor Retail opened 48 new stores in 2023, most of them in the Midwest. Harbor Retail depends "
                    "on two vendors for its point-of-sale terminals."),
    chunk("lumen", "Lumen Optics spent $46 million on research and development in 2022. The board of Lumen Optics "
                   "declared a quarterly dividend of $0.35 per share."),
    chunk("aurora", "Aurora Widgets signed a ten-year lease for its new headquarters in Denver in 2023. The move is "
                    "planned for the autumn of 2024."),
    chunk("ferry", "青石镇的渡口每天早上六点开船。船票在码头东侧的小屋出售！冬天河面结冰时渡口停航。", "渡口.txt"),
    chunk("cobalt", "Cobalt Shipping operates 14 container vessels on routes between Rotterdam and Singapore."),
    chunk("maple", "Maple Foods recalled 2,000 cases of canned soup in March 2023 after a labelling error."),
]
REPLIES = {
    "zephyr": "Here are two questions:\nQ: What total revenue did Zephyr Motors report for fiscal 2023?\nA: $4.2 billion\n"
              "Q: What total revenue did Zephyr Motors report in fiscal 2023?\nA: $4.2 billion",
    "harbor": "Q: Harbor Retail opened 48 new stores in 2023, most of them in the Midwest?\nA: 48 new stores\n"
              "Q: How many new stores did Harbor Retail open in 2023?\nA: 48",
    "lumen": "Q: How much did Lumen Optics spend on research and development in 2022?\nA: $64 million\n"
             "Q: What quarterly dividend per share did the board of Lumen Optics declare?\nA: $0.35 per share",
    "aurora": "Q: In which region did Harbor Retail open most of its 48 new stores in 2023?\nA: 2023\n"
              "Q: In which city is the new headquarters of Aurora Widgets?\nA: Denver",
    "ferry": "问：Where are the ferry tickets of Qingshi town sold?\n答：码头东侧的小屋\n"
             "问：青石镇的渡口每天早上几点开船？\n答：六点",
    "cobalt": "I am sorry, but I cannot write questions about this passage.",
}
STATUSES = {  # question -> what the filters made of it
    "What total revenue did Zephyr Motors report for fiscal 2023?": "kept",
    "What total revenue did Zephyr Motors report in fiscal 2023?": "near_duplicate",
    "Harbor Retail opened 48 new stores in 2023, most of them in the Midwest?": "copies_chunk",
    "How many new stores did Harbor Retail open in 2023?": "kept",
    "How much did Lumen Optics spend on research and development in 2022?": "answer_not_in_chunk",
    "What quarterly dividend per share did the board of Lumen Optics declare?": "kept",
    "In which region did Harbor Retail open most of its 48 new stores in 2023?": "round_trip",  # Harbor's chunk
    "In which city is the new headquarters of Aurora Widgets?": "kept",
    "Where are the ferry tickets of Qingshi town sold?": "wrong_language",
    "青石镇的渡口每天早上几点开船？": "kept",
}


def chunk_of(request: dict, chunks: list[Chunk]) -> Chunk:
    (found,) = [c for c in chunks if c.text in user_text(request)]
    return found


def scripted_teacher(request: dict) -> Action:
    c = chunk_of(request, CHUNKS)
    if c.id == "c-maple":
        return Action(status=500)  # fails (no retries in these params): the chunk gives no question
    return Action(content=REPLIES[c.id[2:]], prompt_tokens=50, completion_tokens=30)


def write_params(tmp_path: Path, params: dict, base_url: str, minilm_dir: str, **questions) -> Path:
    params = json.loads(json.dumps(params))
    params["distill_cot"]["teacher"].update(model="t", revision=None,
                                            endpoint={"base_url": base_url, "api_key_env": "FAKE_TEACHER_KEY"})
    params["serving"].update(concurrency=3, timeout_s=60, max_retries=0)
    params["embedder"].update(model=minilm_dir, revision=None, pooling="mean", query_instruction=None)
    params["own"]["questions"].update(replies=str(tmp_path / "replies"), **questions)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture()
def stage_env(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The teacher folder download@teacher leaves for an endpoint, and this test's own response cache."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "source.json").write_text('{"kind": "endpoint"}')
    monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_TEACHER_KEY", "sk-fake")
    return teacher, tmp_path / "cache" / "responses.sqlite"


def run_stage(params: Path, chunks: Path, teacher: Path, out: Path) -> dict:
    from stages import write_questions

    result = CliRunner().invoke(write_questions.main, ["--params", str(params), "--chunks", str(chunks),
                                                       "--teacher", str(teacher), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_each_filter_fires_once_where_the_script_puts_it(tmp_path, params, minilm_dir, stage_env):
    teacher, _ = stage_env
    chunks = tmp_path / "chunks.jsonl"
    write_jsonl(chunks, [c.row() for c in CHUNKS])
    with FakeOpenAI(scripted_teacher) as fake:
        params_file = write_params(tmp_path, params, fake.base_url, minilm_dir, answers=True, per_chunk=2,
                                   round_trip_top_k=1, dedup_threshold=0.9, max_chunks=None)
        report = run_stage(params_file, chunks, teacher, tmp_path / "out")
    out = tmp_path / "out"

    assert report["dropped"] == {"answer_not_in_chunk": 1, "chunks_not_sampled": 0, "chunks_request_error": 1,
                                 "chunks_unparsed": 1, "copies_chunk": 1, "near_duplicate": 1, "round_trip": 1,
                                 "self_reference": 0, "wrong_language": 1}  # drop_self_references: off
    assert report["questions"]["kept"] == 5 and report["chunks_asked"] == 7
    assert report["chunks_with_a_kept_question"] == 5
    questions = read_jsonl(out / "questions.jsonl")
    assert {q["question"]: q["status"] for q in questions} == STATUSES and len(questions) == len(STATUSES)
    by_question = {q["question"]: q["chunk_id"] for q in questions}
    assert by_question["In which region did Harbor Retail open most of its 48 new stores in 2023?"] == "c-aurora"
    pairs = read_jsonl(out / "pairs.jsonl")
    text = {c.id: c for c in CHUNKS}
    assert [(p["question"], p["answer"], p["chunk_id"]) for p in pairs] == [
        ("What total revenue did Zephyr Motors report for fiscal 2023?", "$4.2 billion", "c-zephyr"),
        ("How many new stores did Harbor Retail open in 2023?", "48", "c-harbor"),
        ("What quarterly dividend per share did the board of Lumen Optics declare?", "$0.35 per share", "c-lumen"),
        ("In which city is the new headquarters of Aurora Widgets?", "Denver", "c-aurora"),
        ("青石镇的渡口每天早上几点开船？", "六点", "c-ferry")]
    assert all(p["context"] == text[p["chunk_id"]].text and p["source"] == text[p["chunk_id"]].source
               and p["page"] == 1 and "status" not in p for p in pairs)
    assert report["wrote"]["sft.jsonl"] == 5  # answered questions, as SFT records
    replies = read_jsonl(out / "replies.jsonl")
    assert {r["chunk_id"] for r in replies} == {c.id for c in CHUNKS} - {"c-maple"}  # the failed one has none

    # each chunk asked once, in its own language's prompt asking for per_chunk questions with answers
    assert sorted(chunk_of(r, CHUNKS).id for r in fake.requests) == sorted(c.id for c in CHUNKS)
    for r in fake.requests:
        prompt = user_text(r)
        if chunk_of(r, CHUNKS).lang == "zh":
            assert "请写出 2 个不同的问题及其答案" in prompt and "答：" in prompt
        else:
            assert "Write 2 different questions" in prompt and "A: <answer copied from the passage>" in prompt
    assert {(r["model"], r["temperature"], r["max_tokens"]) for r in fake.requests} == {("t", 0.0, 160)}
    assert report["usage"]["all"]["requests"] == 7 and report["usage"]["all"]["completion_tokens"] == 6 * 30

    # the kept pairs in LlamaIndex's format (llamaindex.json) read back, and as an extra eval split of
    # build_embed_negatives (train_on: questions)
    from raglab.core.report import StageReport
    from raglab.data.pairs import read_llamaindex, read_pairs
    from stages import build_embed_negatives

    back = read_pairs(out / "llamaindex.json", None, StageReport("x"))
    assert [(b.query, b.passage, b.passage_id) for b in back] == \
        [(p["question"], p["context"], p["chunk_id"]) for p in pairs]
    queries, corpus, relevant = read_llamaindex(out / "llamaindex.json")
    assert len(queries) == 5 and corpus == {p["chunk_id"]: p["context"] for p in pairs}
    assert sorted(relevant.values()) == sorted([p["chunk_id"]] for p in pairs)
    evals = tmp_path / "evals"
    evals.mkdir()
    shutil.copy(out / "llamaindex.json", evals / "own.json")

    source = tmp_path / "source.jsonl"
    write_jsonl(source, [{"question": f"What did Firm {i} report?", "context": f"Firm {i} reported a profit of {i} "
                          f"million dollars in {2000 + i}."} for i in range(10)])
    p = json.loads(json.dumps(params))
    p["build_embed_negatives"].update(source=str(source), train_on="questions", extra_evals=str(evals),
                                      split_by="row", test_size=0.3, val_size=0.0, negatives="random",
                                      num_negatives=2)
    p_file = tmp_path / "embed-params.yaml"
    p_file.write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(build_embed_negatives.main, ["--params", str(p_file), "--questions",
                                                             str(out / "pairs.jsonl"), "--out", str(tmp_path / "embed")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    train = read_jsonl(tmp_path / "embed" / "train.jsonl")
    assert [(r["query"], r["pos"]) for r in train] == [(p["question"], [p["context"]]) for p in pairs]
    assert read_jsonl(tmp_path / "embed" / "own" / "eval.jsonl") == [
        {"query": p["question"], "corpus": [p["context"]]} for p in pairs]
    assert (tmp_path / "embed" / "own" / "kb.txt").read_text(encoding="utf-8").splitlines() == \
        [p["context"] for p in pairs]
    assert len(read_jsonl(tmp_path / "embed" / "test" / "eval.jsonl")) == 3


# --- a kill, a re-run, and a fresh machine with the exported replies ---------------------------------------------

RESUME_CHUNKS = [chunk(f"firm{i}", f"Firm {name} reported revenue of ${i}.{i + 1} billion in {2000 + i} and opened "
                                   f"{10 + i} new offices in {city}.")
                 for i, (name, city) in enumerate(zip(
                     ["Aster", "Birch", "Cedar", "Dahlia", "Elm", "Fern", "Gorse", "Hazel", "Iris", "Juniper", "Kale",
                      "Larch"],
                     ["Oslo", "Lima", "Kyiv", "Doha", "Rome", "Baku", "Riga", "Suva", "Male", "Apia", "Bern", "Lome"]))]


def firm_teacher(request: dict) -> Action:
    c = chunk_of(request, RESUME_CHUNKS)
    name, year = c.text.split()[1], c.text.split(" in ")[1].split()[0]
    return Action(content=f"Here are two questions:\n1. What revenue did Firm {name} report in {year}?\n"
                          f"2. Where did Firm {name} open its new offices?", prompt_tokens=40, completion_tokens=20)


def cached_replies(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def outputs(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    return {"files": {name: (out / name).read_bytes() for name in ("pairs.jsonl", "questions.jsonl", "replies.jsonl")},
            "report": {k: report[k] for k in ("dropped", "questions", "chunks_asked", "chunks_with_a_kept_question")}}


def test_a_killed_run_resumes_without_asking_twice_and_exported_replies_ask_nothing(tmp_path, params, minilm_dir,
                                                                                   stage_env, monkeypatch):
    teacher, _ = stage_env
    chunks = tmp_path / "chunks.jsonl"
    write_jsonl(chunks, [c.row() for c in RESUME_CHUNKS])
    answer_first, held = 5, threading.Event()
    state = {"answered": [], "hold": False}
    lock = threading.Lock()

    def script(request: dict) -> Action:
        with lock:
            hold = state["hold"] and len(state["answered"]) >= answer_first
            if not hold:
                state["answered"].append(chunk_of(request, RESUME_CHUNKS).id)
        if hold:  # the killed run's requests after the first five are held until the kill, never answered
            held.wait(120)
            return Action(drop=True)
        return firm_teacher(request)

    with FakeOpenAI(script) as fake:
        params_file = write_params(tmp_path, params, fake.base_url, minilm_dir, round_trip_top_k=None)

        # an uninterrupted run, on a machine of its own
        monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "whole-cache"))
        run_stage(params_file, chunks, teacher, tmp_path / "whole")
        whole = outputs(tmp_path / "whole")
        assert sorted(state["answered"]) == sorted(c.id for c in RESUME_CHUNKS)

        # the same run killed once five replies are in its response cache, the next requests held unanswered
        monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "cache"))
        state.update(answered=[], hold=True)
        seen_before = len(fake.requests)
        proc = subprocess.Popen([sys.executable, "-m", "stages.write_questions", "--params", str(params_file),
                                 "--chunks", str(chunks), "--teacher", str(teacher), "--out", str(tmp_path / "out")],
                                cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while cached_replies(tmp_path / "cache" / "responses.sqlite") < answer_first:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the first replies never reached the cache"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        held.set()
        first_answered = list(state["answered"])
        first_held = [i for i in (chunk_of(r, RESUME_CHUNKS).id for r in fake.requests[seen_before:])
                      if i not in first_answered]
        assert len(first_answered) == answer_first and first_held  # killed with requests in flight
        assert cached_replies(tmp_path / "cache" / "responses.sqlite") == answer_first
        assert not (tmp_path / "out" / "pairs.jsonl").exists()

        # the re-run asks exactly for the replies the cache lacks, each once: never one answered before
        state.update(answered=[], hold=False)
        before_rerun = len(fake.requests)
        report = run_stage(params_file, chunks, teacher, tmp_path / "out")
        rerun = [chunk_of(r, RESUME_CHUNKS).id for r in fake.requests[before_rerun:]]
        assert len(rerun) == len(set(rerun)) == len(RESUME_CHUNKS) - answer_first
        assert set(rerun) == {c.id for c in RESUME_CHUNKS} - set(first_answered) >= set(first_held)
        assert report["usage"]["this_run"]["requests"] == len(rerun) and report["usage"]["all"]["requests"] == 12
        assert outputs(tmp_path / "out") == whole

        # another machine: an empty response cache, the replies exported to own.questions.replies
        from raglab.generator import teacher as teacher_cli

        exported = CliRunner().invoke(teacher_cli.main, ["export", str(tmp_path / "replies" / "teacher.jsonl.gz"),
                                                         "--params", str(params_file), "--teacher", str(teacher)],
                                      catch_exceptions=False)
        assert exported.exit_code == 0 and "12 replies" in exported.output, exported.output
        monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "fresh-cache"))
        before_fresh = len(fake.requests)
        report = run_stage(params_file, chunks, teacher, tmp_path / "fresh")
        assert len(fake.requests) == before_fresh  # the teacher is asked nothing
    assert report["imported_replies"] == {"teacher.jsonl.gz": {"added": 12, "present": 0, "other": 0}}
    assert report["usage"]["this_run"]["requests"] == 0
    assert outputs(tmp_path / "fresh") == whole
    assert whole["report"]["questions"]["kept"] > 0


def test_val_from_source_chooses_on_real_questions_none_of_them_trained_on(tmp_path, params):
    """``val_from: source``: the validation split is the source's real questions carved from its training side (the
    same carve as ``train_on: source``'s), the teacher's questions train, and a teacher question that repeats a
    validation question is dropped and counted; ``val_from: source`` with ``train_on: source`` is a params error."""
    from raglab.params.loader import load_params
    from stages import build_embed_negatives

    source = tmp_path / "source.jsonl"
    write_jsonl(source, [{"question": f"What did Firm {i} report?", "context": f"Firm {i} reported a profit of {i} "
                          f"million dollars in {2000 + i}."} for i in range(20)])
    questions = tmp_path / "pairs.jsonl"
    write_jsonl(questions, [{"question": f"How much profit did Firm {i} make?", "context": f"Firm {i} reported a "
                             f"profit of {i} million dollars in {2000 + i}."} for i in range(20)]
                + [{"question": f"What did Firm {i} report?", "context": f"Firm {i} made {i} million."}
                   for i in range(20)])
    p = json.loads(json.dumps(params))
    p["build_embed_negatives"].update(source=str(source), extra_evals=str(tmp_path / "none"), split_by="row",
                                      test_size=0.25, val_size=0.2, negatives="random", num_negatives=2)

    def run(name: str, asked: Path = questions, **changes) -> Path:
        p["build_embed_negatives"].update(changes)
        p_file = tmp_path / f"{name}.yaml"
        p_file.write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
        result = CliRunner().invoke(build_embed_negatives.main, ["--params", str(p_file), "--questions",
                                                                 str(asked), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        return tmp_path / name

    labelled = run("labelled", train_on="source", val_from="training")
    real = run("real", train_on="questions", val_from="source")
    val = read_jsonl(real / "val" / "eval.jsonl")
    assert len(val) == 3 and val == read_jsonl(labelled / "val" / "eval.jsonl")  # the same carve, real questions
    assert read_jsonl(real / "test" / "eval.jsonl") == read_jsonl(labelled / "test" / "eval.jsonl")
    asked = {row["query"] for row in read_jsonl(real / "val" / "eval.jsonl") + read_jsonl(real / "test" /
                                                                                            "eval.jsonl")}
    trained = [row["query"] for row in read_jsonl(real / "train.jsonl")]
    report = json.loads((real / "report.json").read_text())
    # 40 teacher rows: 5 whose passage is tested, 5 more repeating a test question, 3 repeating a validation one
    assert report["dropped"]["questions_passage_in_test"] == 5
    assert report["dropped"]["questions_question_in_test"] == 5
    assert report["dropped"]["questions_question_in_val"] == 3
    assert len(trained) == 27 and not asked & set(trained)

    # test_size 1: the whole source is the test split (CMRC's trial_a), the teacher's questions train
    other = tmp_path / "other.jsonl"
    write_jsonl(other, [{"question": f"How many staff did Firm {i} hire?", "context": f"Firm {i} hired {i} staff."}
                        for i in range(5)])
    whole = run("whole", other, train_on="questions", val_from="training", test_size=1, val_size=0.0)
    assert read_jsonl(whole / "test" / "eval.jsonl") == [{"query": f"What did Firm {i} report?", "corpus": [
        f"Firm {i} reported a profit of {i} million dollars in {2000 + i}."]} for i in range(20)]
    assert [r["query"] for r in read_jsonl(whole / "train.jsonl")] == [f"How many staff did Firm {i} hire?"
                                                                       for i in range(5)]

    for bad, match in (({"train_on": "source", "val_from": "source", "test_size": 0.25},
                        "val_from: source carves the source's real questions"),
                       ({"train_on": "source", "val_from": "training", "test_size": 1},
                        "test_size: 1 tests the whole source"),
                       ({"train_on": "questions", "val_from": "source", "test_size": 1},
                        "test_size: 1 tests the whole source")):
        p_file = tmp_path / "bad.yaml"
        p["build_embed_negatives"].update(bad)
        p_file.write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
        with pytest.raises(Exception, match=match):
            load_params(str(p_file))
