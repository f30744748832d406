"""The assistant on a recorded run (``make assistant REV=<record>``) rebuilds its datasets from the mirror: a
missing mirror file stops it at once, in one line that names the file and how to point MIRROR elsewhere."""

from __future__ import annotations

import click
import pytest

from synthetic import write_mirror

REV = "real-cpu-generator-trial"  # a committed record (results/real-cpu-generator-trial)


@pytest.fixture
def repo(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # records are read from results/ of the checkout


def test_a_record_needs_every_mirror_file_its_download_reads(repo, tmp_path):
    from raglab.assistant.records import is_record, missing_mirror_files
    from raglab.experiments.records import RECORDS, record_params

    assert is_record(REV)
    download = record_params(f"{RECORDS}/{REV}")["download"]
    mirror = write_mirror(tmp_path / "mirror")
    assert missing_mirror_files(download, str(mirror)) == []
    (mirror / "cmrc2018" / "cmrc2018_trial_a.json").unlink()
    assert missing_mirror_files(download, str(mirror)) == [mirror / "cmrc2018" / "cmrc2018_trial_a.json"]


# the files the record's download reads, in its order (financial_qa, cmrc2018 validation and trial_a, gsm8k)
FILES = ["financial-qa-10k/Financial-QA-10k.csv", "cmrc2018/cmrc2018_dev.json", "cmrc2018/cmrc2018_trial_a.json",
         "gsm8k/train.jsonl"]


@pytest.mark.parametrize("lacks", [["cmrc2018/cmrc2018_trial_a.json"], FILES])  # FILES: no mirror directory at all
def test_the_assistant_on_a_record_names_the_missing_mirror_file(repo, tmp_path, lacks):
    from raglab.assistant.records import record_workspace

    mirror = tmp_path / "mirror"
    if lacks != FILES:
        write_mirror(mirror)
        for rel in lacks:
            (mirror / rel).unlink()
    with pytest.raises(click.ClickException) as raised:
        record_workspace(REV, tmp_path / "cache", str(mirror))
    message = raised.value.message
    files = "files" if len(lacks) > 1 else "file"
    assert f"needs the {files} {', '.join(str(mirror / rel) for rel in lacks)}, missing: set MIRROR to" in message
    assert f"(make assistant REV={REV} MIRROR=/path/to/datasets)" in message and "\n" not in message
    assert not (tmp_path / "cache").exists()  # stopped before any stage ran
