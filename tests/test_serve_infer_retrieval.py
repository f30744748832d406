"""serve_infer_retrieval outside the pipeline: the first stages that need no trained model run without --model
and --reranker (an untuned embedder, BM25, their hybrid), and a system that needs one is refused before any
encoding, naming the option."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from stages.serve_infer_retrieval import main

KB = ["the company sold alpha widgets", "beta revenue grew ten percent", "gamma costs fell"]


def split(tmp_path):
    folder = tmp_path / "embed" / "test"
    folder.mkdir(parents=True)
    (folder / "kb.txt").write_text("\n".join(KB) + "\n", encoding="utf-8")
    (folder / "eval.jsonl").write_text(json.dumps({"query": "which costs fell", "corpus": [KB[2]]}) + "\n",
                                       encoding="utf-8")
    return tmp_path / "embed"


def params_with(tmp_path, params, systems):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**params, "serve_infer": {**params["serve_infer"], "retrieval": {
        **params["serve_infer"]["retrieval"], "systems": systems}}}), encoding="utf-8")
    return str(path)


def test_untrained_first_stages_run_without_the_trained_models(tmp_path, params):
    out = tmp_path / "infer"
    done = CliRunner().invoke(main, ["--params", params_with(tmp_path, params, ["bm25"]), "--eval",
                                     str(split(tmp_path)), "--out", str(out)])
    assert done.exit_code == 0, done.output
    (row,) = [json.loads(x) for x in (out / "test" / "bm25.jsonl").read_text().splitlines()]
    assert row["retrieved"][0]["text"] == KB[2]


def test_a_system_that_needs_a_trained_model_is_refused_naming_the_option(tmp_path, params):
    done = CliRunner().invoke(main, ["--params", params_with(tmp_path, params, ["bm25", "tuned"]), "--eval",
                                     str(split(tmp_path)), "--out", str(tmp_path / "infer")])
    assert done.exit_code != 0 and "['tuned']" in done.output and "tuned needs --model" in done.output
