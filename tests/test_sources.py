import pytest

from raglab.core.formats import DataError
from raglab.data.sources import load_split


def test_mirror_gives_normalised_rows_for_all_three_datasets(mirror):
    fin = load_split("financial_qa", None, "train", str(mirror), None)
    assert set(fin.rows[0]) == {"question", "answer", "context", "ticker", "filing"}
    assert len(fin.rows) == 442 and len(fin.sha256) == 64

    cmrc = load_split("cmrc2018", None, "validation", str(mirror), None)
    assert cmrc.source.endswith("cmrc2018/cmrc2018_dev.json")
    row = cmrc.rows[0]
    assert set(row) == {"id", "context", "question", "answers"}
    assert row["answers"] and all(a in row["context"] for a in row["answers"])

    gsm = load_split("gsm8k", None, "test", str(mirror), None)
    assert len(gsm.rows) == 10 and "#### " in gsm.rows[0]["answer"]


def test_limit_caps_rows(mirror):
    assert len(load_split("gsm8k", None, "train", str(mirror), 5).rows) == 5


def test_missing_split_names_split_and_file(tmp_path, mirror):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text((mirror / "gsm8k" / "train.jsonl").read_text())
    with pytest.raises(FileNotFoundError, match=r"lacks split 'test' of dataset 'gsm8k': expected file .*gsm8k/test\.jsonl"):
        load_split("gsm8k", None, "test", str(tmp_path), None)


def test_unknown_split_is_a_clear_error(mirror):
    with pytest.raises(ValueError, match="has no split 'dev'"):
        load_split("cmrc2018", None, "dev", str(mirror), None)


def test_trial_half_is_a_mirror_split_and_not_a_hub_one(tmp_path, mirror):
    trial = load_split("cmrc2018", None, "trial_a", str(mirror), None)
    assert trial.source.endswith("cmrc2018/cmrc2018_trial_a.json") and trial.rows[0]["id"].startswith("TRIAL")
    with pytest.raises(FileNotFoundError, match=r"lacks split 'trial_a' of dataset 'cmrc2018': expected file "
                                                r".*cmrc2018/cmrc2018_trial_a\.json"):
        load_split("cmrc2018", None, "trial_a", str(tmp_path), None)
    from raglab.params.pipeline import DatasetSource

    hub = DatasetSource(hub_id="hfl/cmrc2018", config=None, revision="main", splits=["trial_a"])
    with pytest.raises(ValueError, match="split 'trial_a' exists only in a mirror .*the whole trial set is split "
                                         "'test'"):
        load_split("cmrc2018", hub, "trial_a", None, None)


def test_csv_without_a_column_names_file_and_column(tmp_path):
    path = tmp_path / "financial-qa-10k" / "Financial-QA-10k.csv"
    path.parent.mkdir()
    path.write_text("question,answer,ticker,filing\nq,a,T,2023_10K\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"Financial-QA-10k\.csv, row 0: header lacks column\(s\) \['context'\]"):
        load_split("financial_qa", None, "train", str(tmp_path), None)


def test_gsm8k_row_without_answer_names_row_and_field(tmp_path):
    path = tmp_path / "gsm8k" / "train.jsonl"
    path.parent.mkdir()
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="train.jsonl, row 2, field 'answer': missing"):
        load_split("gsm8k", None, "train", str(tmp_path), None)
