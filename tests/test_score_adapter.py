"""Scoring a recorded adapter on other questions: the eval rows, the record's params, the errors (the serving
and scoring it then runs are the stages' own, tested with them)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raglab.core.formats import DataError
from raglab.experiments.score_adapter import eval_rows, main, write_params

REPO = Path(__file__).resolve().parents[1]


def write_questions(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_eval_rows_take_the_gold_after_the_mark_and_count_what_they_drop(tmp_path):
    questions = write_questions(tmp_path / "test.jsonl", [
        {"question": "Ann has 3 pens and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
        {"question": "No gold here", "answer": "it is seven"},
        {"question": "", "answer": "#### 2"},
        {"question": "Tom earns 1,200 a month. A year?", "answer": "#### 14,400"},
        {"question": "One more", "answer": "#### 5"}])
    rows, dropped = eval_rows(questions, limit=2)
    assert [r["gold"] for r in rows] == ["7", "14400"] and dropped == 2
    assert rows[0] == {"id": "test-1", "question": "Ann has 3 pens and buys 4. How many?", "gold": "7"}
    with pytest.raises(DataError, match=r"bad.jsonl, row 1, field 'answer'"):
        eval_rows(write_questions(tmp_path / "bad.jsonl", [{"question": "q"}]), limit=None)


def test_the_records_params_ask_the_chosen_systems(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # today's params.yaml fills the groups a record predates
    record = tmp_path / "record"
    record.mkdir()
    recorded = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    del recorded["rerank"]  # a group added after the run
    recorded["train_llm"]["epochs"] = 7
    (record / "params.yaml").write_text(yaml.safe_dump(recorded), encoding="utf-8")
    params = yaml.safe_load(write_params(record, tmp_path, ["base", "sft"]).read_text(encoding="utf-8"))
    assert params["serve_infer"]["math"]["systems"] == ["base", "sft"]
    assert params["train_llm"]["epochs"] == 7 and "rerank" in params


def test_a_record_without_an_adapter_is_refused_before_anything_runs(tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    shutil.copy(REPO / "params.yaml", record / "params.yaml")
    questions = write_questions(tmp_path / "q.jsonl", [{"question": "q", "answer": "#### 1"}])
    result = CliRunner().invoke(main, [str(record), "--questions", str(questions), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "holds no LoRA adapter" in result.output
    assert not (tmp_path / "out").exists()
