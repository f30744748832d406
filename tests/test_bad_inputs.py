"""Bad inputs end a stage with one line that says where and what, exit status 1, and no traceback.

Each case runs a real stage (or the params check) as a user would, on a copy of the synthetic
mirror with one thing broken. README's table of input -> outcome lists the same cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synthetic import write_mirror

REPO = Path(__file__).resolve().parents[1]
CMRC = "cmrc2018/cmrc2018_train.json"
CSV = "financial-qa-10k/Financial-QA-10k.csv"
GSM = "gsm8k/train.jsonl"


def params_file(tmp_path: Path, mirror: Path, changes: dict | None = None, name: str = "params.yaml") -> Path:
    from raglab.params.loader import merge

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params = merge(merge(params, {"download": {"mirror": str(mirror)}}), changes or {})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def run(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "RAGLAB_CACHE": str(tmp_path / "cache"), **env})


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    print(f"\n[one-line error] {last}")  # README's table quotes these (pytest -s shows them)
    return last


@pytest.fixture()
def mirror(tmp_path):
    return write_mirror(tmp_path / "mirror")


def download(tmp_path: Path, mirror: Path, changes: dict | None = None, **env):
    return run(["stages.download", "--params", str(params_file(tmp_path, mirror, changes, "download.yaml")),
                "--out", str(tmp_path / "raw")], tmp_path, **env)


def cut(path: Path, at: int) -> None:
    path.write_bytes(path.read_bytes()[:at])


# --- the table of the issue ---------------------------------------------------------------------

def test_csv_header_without_context(tmp_path, mirror):
    path = mirror / CSV
    path.write_text(path.read_text().replace("context", "passage", 1))
    assert_one_line_error(download(tmp_path, mirror), "Financial-QA-10k.csv, row 0", "header lacks column(s) ['context']")


def test_cmrc_cut_inside_a_multibyte_character(tmp_path, mirror):
    path = mirror / CMRC
    data = path.read_bytes()
    cut(path, data.index("来".encode()) + 1)  # the first byte of a 3-byte character
    assert_one_line_error(download(tmp_path, mirror), "cmrc2018_train.json", "not valid UTF-8 at byte")


def test_cmrc_cut_at_a_character_boundary(tmp_path, mirror):
    path = mirror / CMRC
    cut(path, len(path.read_bytes()) // 2)
    cut(path, len(path.read_text(errors="ignore").encode()))
    assert_one_line_error(download(tmp_path, mirror), "cmrc2018_train.json", "not valid JSON", "line")


def test_gsm8k_line_that_is_not_json(tmp_path, mirror):
    path = mirror / GSM
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    assert_one_line_error(download(tmp_path, mirror), "train.jsonl, row 2", "not valid JSON")


def test_mirror_that_does_not_exist(tmp_path):
    last = assert_one_line_error(download(tmp_path, tmp_path / "no-mirror"), "lacks split", "expected file")
    assert "no-mirror" in last


def test_a_typo_in_a_parameter_name(tmp_path, mirror):
    proc = download(tmp_path, mirror, {"train_embed": {"learning_rte": 1e-3}})
    assert_one_line_error(proc, "train_embed.learning_rte: unknown key; did you mean learning_rate?")


# --- more bad inputs ----------------------------------------------------------------------------

def test_empty_cmrc_file(tmp_path, mirror):
    (mirror / CMRC).write_text("")
    assert_one_line_error(download(tmp_path, mirror), "cmrc2018_train.json", "empty file")


def test_empty_csv(tmp_path, mirror):
    (mirror / CSV).write_text("")
    assert_one_line_error(download(tmp_path, mirror), "Financial-QA-10k.csv", "empty file")


def test_csv_with_an_unclosed_quote(tmp_path, mirror):
    path = mirror / CSV
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace(",", ',"', 1)  # opens a quote that never closes
    path.write_text("\n".join(lines) + "\n")
    assert_one_line_error(download(tmp_path, mirror), "Financial-QA-10k.csv", "not valid CSV")


def test_csv_row_with_too_many_fields(tmp_path, mirror):
    path = mirror / CSV
    lines = path.read_text().splitlines()
    lines[3] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    assert_one_line_error(download(tmp_path, mirror), "Financial-QA-10k.csv, row 3", "fields in the header")


def test_duplicated_question_ids(tmp_path, mirror):
    path = mirror / CMRC
    doc = json.loads(path.read_text())
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    qas[1]["id"] = qas[0]["id"]
    path.write_text(json.dumps(doc, ensure_ascii=False))
    assert_one_line_error(download(tmp_path, mirror), "cmrc2018_train.json, row 2, field 'id'", "occurs twice")


def test_an_answer_that_is_not_in_its_passage_is_kept_and_counted(tmp_path, mirror):
    path = mirror / CMRC
    doc = json.loads(path.read_text())
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "不在文中的答案", "answer_start": 0}] * 3
    path.write_text(json.dumps(doc, ensure_ascii=False))
    params = params_file(tmp_path, mirror)
    assert download(tmp_path, mirror).returncode == 0
    proc = run(["stages.build_sft", "--params", str(params), "--source", str(tmp_path / "raw" / "cmrc2018"),
                "--out", str(tmp_path / "sft")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "sft" / "report.json").read_text())
    assert report["answer_not_in_context"] == 1


def test_a_parameter_of_the_wrong_type(tmp_path, mirror):
    assert_one_line_error(download(tmp_path, mirror, {"train_embed": {"epochs": "two"}}),
                          "train_embed.epochs: Input should be a valid number (got 'two')")


@pytest.mark.parametrize("changes, message", [
    ({"build_embed_negatives": {"test_size": 1.5}}, "build_embed_negatives.test_size: Input should be less than or equal to 1"),
    ({"build_embed_negatives": {"negatives": "hardd"}}, "build_embed_negatives.negatives: Input should be 'random' or 'hard'"),
    ({"embedder": {"pooling": "max"}}, "embedder.pooling: Input should be 'cls', 'mean' or 'last_token'"),
    ({"train_embed": {"soup_size": 0}}, "train_embed.soup_size: Input should be greater than 0"),
    ({"train_embed": {"learning_rate": -1.0e-4}}, "train_embed.learning_rate: Input should be greater than 0"),
    ({"build_embed_negatives": {"hard_negative_ranks": [60, 5]}}, "needs 0 <= lo < hi"),
    ({"score": {"retrieval": {"context_top_n": 11}}}, "context_top_n (11) must not exceed serve_infer.retrieval.top_k (10)"),
    ({"prompt": {"template": "{context} only"}}, "prompt.template: prompt template must use exactly the fields"),
])
def test_out_of_range_values_and_unknown_choices(tmp_path, mirror, changes, message):
    assert_one_line_error(download(tmp_path, mirror, changes), message)


def test_a_profile_with_an_unknown_key_stops_before_dvc(tmp_path, monkeypatch):
    profile = tmp_path / "typo.yaml"
    profile.write_text("train_llm:\n  lora_rnak: 16\n")
    proc = run(["raglab.experiments.profiles", str(profile), "--dry-run"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "train_llm.lora_rnak: unknown key; did you mean lora_rank?" in proc.stderr
    assert "dvc exp run" not in proc.stdout


def test_a_model_folder_that_does_not_exist(tmp_path, mirror):
    params = params_file(tmp_path, mirror, {"llm": {"model": str(tmp_path / "no-model")}})
    proc = run(["stages.download_model", "llm", "--params", str(params), "--out", str(tmp_path / "llm")], tmp_path)
    assert_one_line_error(proc, "no model folder at", "no-model")


def test_a_package_folder_whose_model_is_in_a_subfolder(tmp_path, mirror):
    """An installed package's folder named instead of its model/ subfolder (as the packaged MiniLM is): one line
    naming the folder to use, not a tokenizer error from deep in transformers."""
    (tmp_path / "package" / "model").mkdir(parents=True)
    (tmp_path / "package" / "model" / "config.json").write_text("{}")
    params = params_file(tmp_path, mirror, {"llm": {"model": str(tmp_path / "package")}})
    proc = run(["stages.download_model", "llm", "--params", str(params), "--out", str(tmp_path / "llm")], tmp_path)
    assert_one_line_error(proc, "holds no config.json, its subfolder", str(tmp_path / "package" / "model"))


def test_an_external_endpoint_whose_key_variable_is_unset(tmp_path, mirror):
    params = params_file(tmp_path, mirror, {"distill_cot": {
        "train_split": "train", "eval_split": "train", "teacher": {
            "model": "t", "endpoint": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "RAGLAB_TEST_UNSET_KEY"}}}})
    assert download(tmp_path, mirror).returncode == 0
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAGLAB_TEST_UNSET_KEY"}
    proc = subprocess.run([sys.executable, "-m", "stages.distill_cot", "--params", str(params), "--source",
                           str(tmp_path / "raw" / "gsm8k"), "--teacher", str(teacher), "--out", str(tmp_path / "d")],
                          cwd=REPO, capture_output=True, text=True, env={**env, "RAGLAB_CACHE": str(tmp_path / "c")})
    assert_one_line_error(proc, "environment variable RAGLAB_TEST_UNSET_KEY", "is not set")


def test_gsm8k_rows_without_a_numeric_answer_are_dropped_and_counted(tmp_path, mirror):
    path = mirror / GSM
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["answer"] = rows[0]["answer"].split("####")[0]
    rows[1]["answer"] += "0 apples"  # "#### 1230 apples" is not a number
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert download(tmp_path, mirror).returncode == 0
    from raglab.core.formats import read_jsonl
    from raglab.core.report import StageReport
    from raglab.generator.distill import gsm8k_questions

    report = StageReport("t")
    assert len(gsm8k_questions(read_jsonl(tmp_path / "raw" / "gsm8k" / "train.jsonl"), "train", report)) == 38
    assert report.dropped == {"train_no_numeric_gold": 2}


def test_a_split_the_dataset_does_not_have(tmp_path, mirror):
    proc = download(tmp_path, mirror, {"download": {"datasets": {"cmrc2018": {"splits": ["dev"]}}}})
    assert_one_line_error(proc, "dataset 'cmrc2018' has no split 'dev'")


def test_the_traceback_is_there_when_asked_for(tmp_path, mirror):
    (mirror / CMRC).write_text("")
    proc = download(tmp_path, mirror, RAGLAB_TRACEBACK="1")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "empty file" in proc.stderr
