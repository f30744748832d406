import json

import pytest

from raglab.core.formats import DataError, read_jsonl, write_jsonl, write_lines, write_text


def test_jsonl_round_trip_keeps_unicode(tmp_path):
    rows = [{"q": "已知文段", "n": 1}, {"q": "b", "n": 2}]
    assert write_jsonl(tmp_path / "a.jsonl", rows) == 2
    assert read_jsonl(tmp_path / "a.jsonl") == rows
    assert "已知文段" in (tmp_path / "a.jsonl").read_text(encoding="utf-8")


def test_bad_jsonl_row_names_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl, row 2: not valid JSON"):
        read_jsonl(path)


def test_non_object_row_is_an_error(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text(json.dumps([1, 2]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 1: expected a JSON object"):
        read_jsonl(path)


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.jsonl"
    write_text(path, "old\n")

    def rows():
        yield {"a": 1}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(path, rows())
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_line_file_rejects_embedded_newline(tmp_path):
    with pytest.raises(DataError, match="kb.txt, row 2"):
        write_lines(tmp_path / "kb.txt", ["one", "two\nlines"])
