"""The numbers README.md and docs/ state are the records' (issue 37): the committed tables equal what
`make tables` generates from results/, every prose claim of docs/claims.yaml still reads its record, a number typed
into README's table fails the check, a claim fails when its record changes, and a timing needs its machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raglab.experiments import baseline, tables
from raglab.experiments.numbers import NumberError, Records
from raglab.experiments.tables import check_claims, generate, markers, records_of, render_block

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def records() -> Records:
    return records_of(REPO)


def readme_block(text: str) -> str:
    start, end = markers("readme")
    return text[text.index(start) + len(start) + 1:text.index(end)]


def test_committed_tables_and_claims_are_what_the_records_give(records):
    assert generate(REPO, records=records) == []
    assert check_claims(REPO, records) == []


def test_make_baseline_md_prints_readmes_table(records, monkeypatch):
    monkeypatch.setattr(tables, "records_of", lambda repo, resamples=2000: records)
    monkeypatch.setattr(baseline, "records_of", lambda repo, resamples=2000: records)
    result = CliRunner().invoke(baseline.main, ["--md", "--table", "readme", "--repo", str(REPO)])
    assert result.exit_code == 0, result.output
    assert result.output == readme_block((REPO / "README.md").read_text(encoding="utf-8"))


def copy_of_the_repo(tmp_path: Path) -> Path:
    """README, docs/ and (a link to) results/: what the check reads."""
    (tmp_path / "results").symlink_to(REPO / "results", target_is_directory=True)
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    return tmp_path


def test_a_number_typed_into_readmes_table_fails_the_check(tmp_path, records, monkeypatch):
    repo = copy_of_the_repo(tmp_path)
    readme = repo / "README.md"
    text = readme.read_text(encoding="utf-8")
    table = readme_block(text)
    typed = table.replace("**91.14 / 88.86**", "**91.50 / 88.86**", 1)
    assert typed != table  # the planted edit lands in the generated table
    readme.write_text(text.replace(table, typed), encoding="utf-8")

    diffs = generate(repo, records=records)
    assert len(diffs) == 1 and "README.md (committed)" in diffs[0]
    assert "-|" in diffs[0] and "91.50" in diffs[0] and "+|" in diffs[0] and "91.14" in diffs[0]
    monkeypatch.setattr(tables, "records_of", lambda repo, resamples=2000: records)
    result = CliRunner().invoke(tables.main, ["--check", "--repo", str(repo)])
    assert result.exit_code == 1 and "91.50" in result.output
    assert readme.read_text(encoding="utf-8") != text  # --check changes nothing...
    assert CliRunner().invoke(tables.main, ["--repo", str(repo)]).exit_code == 0  # ...make tables rewrites it
    assert readme.read_text(encoding="utf-8") == text


def test_a_block_without_its_markers_is_an_error(tmp_path, records):
    repo = copy_of_the_repo(tmp_path)
    readme = repo / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace(markers("readme")[1], ""), encoding="utf-8")
    with pytest.raises(NumberError, match="block readme needs"):
        generate(repo, records=records)


def write_record(repo: Path, sft_em: list[float]) -> None:
    """A record ``rec`` of four CMRC questions on two passages, untuned and SFT, with a training time."""
    folder = repo / "results" / "rec" / "score" / "generation" / "test"
    folder.mkdir(parents=True, exist_ok=True)
    ids = ["DEV_1_QUERY_0", "DEV_1_QUERY_1", "DEV_2_QUERY_0", "DEV_2_QUERY_1"]
    for system, em in (("base", [0.0, 0.0, 1.0, 0.0]), ("sft", sft_em)):
        rows = [{"id": i, "prediction": "x", "em": e, "origin": 1.0} for i, e in zip(ids, em)]
        (folder / f"{system}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    metrics = repo / "results" / "rec" / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / "train_llm.json").write_text(json.dumps({"train_runtime_s": 2041.0, "steps": 108}), encoding="utf-8")


def synthetic_repo(tmp_path: Path, claim: dict) -> Path:
    write_record(tmp_path, [1.0, 1.0, 1.0, 0.0])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "tables.yaml").write_text(yaml.safe_dump({"brief": {}, "blocks": {}}), encoding="utf-8")
    (tmp_path / "docs" / "claims.yaml").write_text(yaml.safe_dump({"rec-em": claim}, allow_unicode=True),
                                                   encoding="utf-8")
    (tmp_path / "docs" / "page.md").write_text("SFT reaches EM 75.00, up\n+50.00 [0.00, +100.00] from untuned.\n",
                                               encoding="utf-8")
    return tmp_path


CLAIM = {"file": "docs/page.md", "quote": "EM 75.00, up +50.00 [0.00, +100.00]",
         "value": "EM {mean:rec/generation/test/sft:em}, "
                  "up {delta:rec/generation/test/sft=rec/generation/test/base:em}"}


def test_a_claim_fails_when_its_record_changes(tmp_path):
    repo = synthetic_repo(tmp_path, CLAIM)
    assert check_claims(repo) == []  # the quote, wrapped over two lines in the page, is what the record gives

    write_record(repo, [1.0, 0.0, 1.0, 0.0])  # the record changes: one SFT answer fewer right
    problems = check_claims(repo)
    assert problems == ["claim rec-em: the records give 'EM 50.00, up +25.00 [0.00, +50.00]'; docs/page.md quotes "
                        "'EM 75.00, up +50.00 [0.00, +100.00]'"]

    write_record(repo, [1.0, 1.0, 1.0, 0.0])
    (repo / "docs" / "page.md").write_text("SFT reaches EM 80.00.\n", encoding="utf-8")  # the prose changes
    assert check_claims(repo) == ["claim rec-em: 'EM 75.00, up +50.00 [0.00, +100.00]' is no longer in docs/page.md"]


def test_a_timing_is_printed_only_beside_its_machine(tmp_path):
    write_record(tmp_path, [1.0, 1.0, 1.0, 0.0])
    records = Records(tmp_path)
    with pytest.raises(NumberError, match="has no machine.json"):
        records.render("{time:rec:train_llm.train_runtime_s:min} of training")
    machine = {"cpu": {"model": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "cores": 2,
                       "flags": ["amx_bf16", "avx512_bf16"]}, "shared": False,
               "stages": {"train_llm": {"machine": {"cpu": {"model": "AMD EPYC 7763 64-Core Processor", "cores": 2,
                                                            "flags": []}, "shared": True}}}}
    (tmp_path / "results" / "rec" / "machine.json").write_text(json.dumps(machine), encoding="utf-8")
    with pytest.raises(NumberError, match=r"without its machine on the same line \(add \{machine:rec:train_llm\}"):
        records.render("{time:rec:train_llm.train_runtime_s:min} of training\non {machine:rec:train_llm}")
    with pytest.raises(NumberError, match="without its machine"):  # the record's machine is not the stage's
        records.render("{time:rec:train_llm.train_runtime_s:min} of training on {machine:rec}")
    assert (records.render("{time:rec:train_llm.train_runtime_s:s} ({time:rec:train_llm.train_runtime_s:min}) on "
                           "{machine:rec:train_llm}")
            == "2,041 s (34 min) on 2-core AMD EPYC 7763, no AVX-512, shared with other jobs")
    with pytest.raises(NumberError, match="is a timing"):
        records.render("{value:rec:train_llm.train_runtime_s}")
    assert records.render("{value:rec:train_llm.steps} steps") == "108 steps"


def test_placeholders_name_what_the_records_hold(tmp_path):
    write_record(tmp_path, [1.0, 1.0, 1.0, 0.0])
    records = Records(tmp_path, brief={"em": "39.72 (1,002 trial questions)"})
    assert records.render("{n:rec/generation/test/sft} on {passages:rec/generation/test/sft}") == "4 on 2"
    assert records.render("{noise:rec/generation/test/sft=rec/generation/test/base:em}") == "within noise"
    text = "{brief:em}; \\boxed{} and {context} stay"  # braces that are no placeholder are left as they are
    assert records.render(text) == "39.72 (1,002 trial questions); \\boxed{} and {context} stay"
    reports = tmp_path / "results" / "rec" / "reports"
    reports.mkdir()
    (reports / "write_questions.json").write_text(json.dumps(
        {"dropped": {"round_trip": 1802}, "questions": {"kept": 2120}, "wrote": {"questions.jsonl": 3998},
         "seconds": 92.1}), encoding="utf-8")
    assert (records.render("{report:rec:write_questions.wrote.questions.jsonl} parsed, "
                           "{report:rec:write_questions.questions.kept} kept, "
                           "{report:rec:write_questions.dropped.round_trip} dropped")
            == "3,998 parsed, 2,120 kept, 1,802 dropped")
    for wrong, message in (("{report:rec:write_questions.seconds}", "is a timing"),
                           ("{report:rec:write_questions.dropped.copies}", "has no dropped.copies"),
                           ("{report:rec:chunk.wrote}", "chunk.json does not exist")):
        with pytest.raises(NumberError, match=message):
            records.render(wrong)
    for wrong, message in (("{mean:rec/generation/test/dpo:em}", "not RUN/TRACK/SPLIT/SYSTEM"),
                           ("{mean:rec/generation/test/sft:f1}", "no query of"),
                           ("{mean:rec/generation/test/sft}", "not enough values"),
                           ("{brief:cosine}", "no brief quote")):
        with pytest.raises(NumberError, match=message):
            records.render(wrong)
