"""A user's own labelled pairs: CSV / JSON Lines / Parquet with a column mapping, passage ids with a corpus, and
LlamaIndex's EmbeddingQAFinetuneDataset JSON read and written as is. All rows are made up here."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from raglab.core.formats import DataError, write_jsonl
from raglab.core.report import StageReport
from raglab.data.pairs import (Pair, read_corpus, read_llamaindex, read_pairs, text_id, to_llamaindex,
                               write_llamaindex)

ROWS = [
    {"question": "When does the ferry leave?", "context": "The ferry leaves at six.", "reply": "At six", "doc": "d1"},
    {"question": "", "context": "A row without a question.", "reply": "", "doc": "d2"},
    {"question": "渡口几点开船？", "context": "渡口每天早上六点开船。", "reply": "六点", "doc": "d3"},
    {"question": "Where are tickets sold?", "context": "   ", "reply": "", "doc": "d4"},
]
MAPPING = {"query": "question", "passage": "context", "answer": "reply"}


@pytest.fixture()
def report() -> StageReport:
    return StageReport("pairs")


def expected_pairs() -> list[Pair]:
    return [Pair("When does the ferry leave?", "The ferry leaves at six.", text_id("The ferry leaves at six."),
                 "At six"),
            Pair("渡口几点开船？", "渡口每天早上六点开船。", text_id("渡口每天早上六点开船。"), "六点")]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".json"])
def test_each_table_format_with_a_column_mapping(tmp_path, report, suffix):
    path = tmp_path / f"labelled{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        write_jsonl(path, ROWS)
    elif suffix == ".json":  # a JSON array of rows (an object would be LlamaIndex's dataset)
        path.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    else:
        frame.to_parquet(path, index=False)
    assert read_pairs(path, MAPPING, report) == expected_pairs()
    assert report.read["pair_rows"] == 4
    assert report.dropped == {"pairs_empty_query": 1, "pairs_empty_passage": 1}


def test_passage_ids_are_kept_and_one_id_with_two_texts_is_an_error(tmp_path, report):
    path = tmp_path / "ids.csv"
    pd.DataFrame(ROWS[:1] + ROWS[2:3]).to_csv(path, index=False)
    pairs = read_pairs(path, {**MAPPING, "passage_id": "doc"}, report)
    assert [p.passage_id for p in pairs] == ["d1", "d3"]

    clash = [{"query": "a?", "passage": "One text.", "passage_id": "007"},
             {"query": "b?", "passage": "Another text.", "passage_id": "007"}]
    pd.DataFrame(clash).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"ids.csv, row 2, field 'passage': passage id '007' has another text in row 1"):
        read_pairs(path, None, report)  # the file's columns already have this lab's names: no mapping needed


def test_a_missing_column_names_file_column_and_the_columns_there(tmp_path, report):
    path = tmp_path / "labelled.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"labelled.csv, row 0: no column 'passage_text' \(this lab's passage\); "
                                        r"the file has columns \['question', 'context', 'reply', 'doc'\]"):
        read_pairs(path, {"query": "question", "passage": "passage_text"}, report)
    with pytest.raises(DataError, match=r"no column 'query' \(this lab's query\)"):
        read_pairs(path, None, report)
    with pytest.raises(DataError, match=r"no passage column: map 'passage' \(the text\) or 'passage_id'"):
        read_pairs(path, {"query": "question"}, report)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['context'\]"):
        read_pairs(path, {"query": "question", "context": "context"}, report)


def test_bad_files_are_located_errors(tmp_path, report):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("query,passage\na?,text\nb?,text,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"ragged.csv: not a well-formed CSV \(.*Expected 2 fields in line 3, saw 3"):
        read_pairs(ragged, None, report)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.csv, row 0: empty file"):
        read_pairs(tmp_path / "empty.csv", None, report)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"bad.parquet: not a readable Parquet file"):
        read_pairs(tmp_path / "bad.parquet", None, report)
    write_jsonl(tmp_path / "nested.jsonl", [{"query": "a?", "passage": ["a", "list"]}])
    with pytest.raises(DataError, match=r"nested.jsonl, row 1, field 'passage': expected text, got list"):
        read_pairs(tmp_path / "nested.jsonl", None, report)
    (tmp_path / "pairs.xlsx").write_bytes(b"")
    with pytest.raises(DataError, match=r"no reader for '.xlsx' files"):
        read_pairs(tmp_path / "pairs.xlsx", None, report)


def test_passage_ids_with_a_corpus_file(tmp_path, report, caplog):
    pairs_path, corpus_path = tmp_path / "pairs.jsonl", tmp_path / "corpus.csv"
    write_jsonl(pairs_path, [{"q": "When does the ferry leave?", "doc": "d1"},
                             {"q": "Where are tickets sold?", "doc": "d2"},
                             {"q": "Who built the pier?", "doc": "d9"},
                             {"q": "A question with no id", "doc": ""}])
    pd.DataFrame({"doc": ["d1", "d2"], "text": ["The ferry leaves at six.", "Tickets are sold on the pier."]}) \
        .to_csv(corpus_path, index=False)
    with caplog.at_level(logging.WARNING, logger="raglab"):
        pairs = read_pairs(pairs_path, {"query": "q", "passage_id": "doc"}, report, corpus=corpus_path,
                           corpus_columns={"passage": "text"})
    assert pairs == [Pair("When does the ferry leave?", "The ferry leaves at six.", "d1"),
                     Pair("Where are tickets sold?", "Tickets are sold on the pier.", "d2")]
    assert report.dropped == {"pairs_unknown_passage_id": 1, "pairs_empty_passage_id": 1}
    assert report.read == {"corpus_passages": 2, "pair_rows": 4}
    assert any("dropped 1 pair(s)" in r.getMessage() and "'d9'" in r.getMessage() for r in caplog.records)

    with pytest.raises(DataError, match=r"pairs.jsonl: passages are given by id \(column 'doc'\) and no corpus"):
        read_pairs(pairs_path, {"query": "q", "passage_id": "doc"}, report)
    with pytest.raises(DataError, match=r"corpus.csv, row 0: no column 'passage' \(the corpus' passage\); "
                                        r"the file has columns \['doc', 'text'\]"):
        read_pairs(pairs_path, {"query": "q", "passage_id": "doc"}, report, corpus=corpus_path)
    (tmp_path / "corpus.json").write_text(json.dumps({"d1": "The ferry leaves at six."}), encoding="utf-8")
    assert read_corpus(tmp_path / "corpus.json") == {"d1": "The ferry leaves at six."}


def llamaindex_dataset() -> dict:
    return {
        "queries": {"q1": "Which documents mention the ferry?", "q2": "渡口几点开船？", "q3": "An unanswered query"},
        "corpus": {"n1": "The ferry leaves at six.", "n2": "The ferry is painted blue.", "n3": "渡口每天早上六点开船。",
                   "n4": "A passage no query names."},
        "relevant_docs": {"q1": ["n1", "n2"], "q2": ["n3"], "q3": []},
    }


def test_llamaindex_round_trip_keeps_the_three_dicts_and_its_layout(tmp_path, report):
    data = llamaindex_dataset()
    path = tmp_path / "train_dataset.json"
    write_llamaindex(path, data["queries"], data["corpus"], data["relevant_docs"])
    # what LlamaIndex's save_json writes: json.dump(model.dict(), f, indent=4), `mode` last
    assert path.read_text(encoding="utf-8") == json.dumps({**data, "mode": "text"}, indent=4)
    assert read_llamaindex(path) == (data["queries"], data["corpus"], data["relevant_docs"])

    again = tmp_path / "again.json"
    write_llamaindex(again, *read_llamaindex(path))
    assert again.read_bytes() == path.read_bytes()

    pairs = read_pairs(path, None, report)  # one pair per (query, relevant doc)
    assert [(p.query_id, p.passage_id) for p in pairs] == [("q1", "n1"), ("q1", "n2"), ("q2", "n3")]
    assert pairs[2] == Pair("渡口几点开船？", "渡口每天早上六点开船。", "n3", query_id="q2")
    assert report.dropped == {"pairs_no_relevant_doc": 1}
    queries, corpus, relevant = to_llamaindex(pairs)
    assert relevant == {"q1": ["n1", "n2"], "q2": ["n3"]}
    assert queries == {"q1": data["queries"]["q1"], "q2": data["queries"]["q2"]}
    assert corpus == {k: v for k, v in data["corpus"].items() if k != "n4"}


def test_pairs_from_a_table_go_to_llamaindex_and_back(tmp_path, report):
    path = tmp_path / "labelled.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False)
    pairs = read_pairs(path, MAPPING, report)
    out = tmp_path / "dataset.json"
    write_llamaindex(out, *to_llamaindex(pairs))
    back = read_pairs(out, None, StageReport("back"))
    assert [(p.query, p.passage, p.passage_id) for p in back] == [(p.query, p.passage, p.passage_id) for p in pairs]
    assert back[0].query_id == text_id(pairs[0].query)


def test_bad_llamaindex_files_are_located_errors(tmp_path, report):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"queries": {}, "corpus": {}}), encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset.json: not LlamaIndex's EmbeddingQAFinetuneDataset: expected keys "
                                        r"\['queries', 'corpus', 'relevant_docs'\], found \['corpus', 'queries'\]"):
        read_llamaindex(path)
    data = llamaindex_dataset()
    data["relevant_docs"]["q2"] = "n3"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset.json, field 'relevant_docs.q2': expected a list of doc ids"):
        read_pairs(path, None, report)
    path.write_text(json.dumps({**llamaindex_dataset(), "mode": "image"}), encoding="utf-8")
    with pytest.raises(DataError, match=r"field 'mode': mode 'image': only text datasets are read"):
        read_llamaindex(path)

    data = llamaindex_dataset()
    data["relevant_docs"]["q1"].append("n7")
    path.write_text(json.dumps(data), encoding="utf-8")
    assert len(read_pairs(path, None, report)) == 3 and report.dropped["pairs_unknown_passage_id"] == 1
    with pytest.raises(ValueError, match=r"query 'q1' has relevant doc\(s\) \['n7'\] not in the corpus"):
        write_llamaindex(tmp_path / "out.json", *read_llamaindex(path))
