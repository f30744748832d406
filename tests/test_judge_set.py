"""The judge-validation set: built with labels known by construction, and scored through ragas as score_rag
scores, by a scripted judge that is right (AUC 1.0) and by one that flips a coin (AUC about 0.5)."""

from __future__ import annotations

import json
import zlib

import pytest
from fake_openai import Action, FakeOpenAI, ragas_input, schema_title

from raglab.core.report import StageReport
from raglab.evaluation.judge import judge_scores
from raglab.evaluation.judge_set import build_items, change_digits, judge_report, roc_auc


def cmrc_rows(passages: int = 60) -> list[dict]:
    rows = []
    for p in range(passages):
        year, city = 1900 + p, f"城市{chr(0x4e00 + p)}"
        context = f"第{p}号公司成立于{year}年。总部位于{city}。员工{p * 7 + 3}人。"
        rows += [{"id": f"DEV_{p}_QUERY_0", "context": context, "question": f"第{p}号公司成立于哪一年？",
                  "answers": [f"{year}年"]},
                 {"id": f"DEV_{p}_QUERY_1", "context": context, "question": f"第{p}号公司总部在哪里？",
                  "answers": [city]}]
    return rows


def test_items_carry_labels_known_by_construction():
    items = build_items(cmrc_rows(), passages=50, seed=1)
    assert items == build_items(cmrc_rows(), passages=50, seed=1)  # seeded
    kinds = {k: sum(i["kind"] == k for i in items) for k in ("gold", "other_question", "changed_number", "other_passage")}
    assert kinds == {"gold": 50, "other_question": 50, "changed_number": 50, "other_passage": 50}
    for item in items:
        context, answer = item["passages"][0], item["prediction"]
        assert item["faithfulness"] == (answer in context)  # faithful exactly when the passage holds it
        assert item["answer_relevancy"] == (item["kind"] in ("gold", "changed_number"))
    assert change_digits("1990年") == "2001年" and change_digits("上海") == "上浸" and change_digits("abc") == "abc"


def test_auc_and_accuracy_of_verdicts():
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.8]) == pytest.approx(0.875)
    assert roc_auc([1, 1], [0.5, 0.6]) is None
    items = [{"faithfulness": y, "answer_relevancy": None, "kind": k}
             for y, k in zip((1, 1, 0, 0), ("gold", "gold", "changed_number", "other_passage"))]
    report = judge_report(items, [{"faithfulness": v, "answer_relevancy": None} for v in (1.0, None, 0.0, 0.75)])
    assert report["faithfulness"] == {"n": 4, "judged": 0.75, "auc": 1.0, "accuracy": pytest.approx(2 / 3, abs=1e-4),
                                      "mean_by_kind": {"gold": 1.0, "changed_number": 0.0, "other_passage": 0.75}}
    assert report["answer_relevancy"] == {"n": 0, "judged": None, "auc": None, "accuracy": None, "mean_by_kind": {}}


def flip(text: str) -> bool:
    """A coin that lands the same way for the same text, whatever order the requests come in."""
    return zlib.crc32(text.encode()) % 2 == 1


def scripted_judge(items: list[dict], coin: bool):
    """A judge whose verdicts are right (a statement is supported when the passage holds it; the question
    generated back is the one the answer answers), or coin flips."""
    answers = {i["prediction"]: i["question"] for i in items if i["answer_relevancy"] == 1}
    asked = {i["prediction"]: i["question"] for i in items}

    def script(request: dict) -> Action:
        title, given = schema_title(request), ragas_input(request)
        if title == "AnswerRelevanceOutput":
            if coin:  # the asked question back (relevancy 1) or another one, whatever the answer
                question = asked[given["response"]] if flip(given["response"]) else "天空是什么颜色的？"
            else:
                question = answers.get(given["response"], "天空是什么颜色的？")
            return Action(content=json.dumps({"question": question, "noncommittal": 0}))
        if title == "StatementGeneratorOutput":
            return Action(content=json.dumps({"statements": [given.get("answer") or given.get("response")]}))
        if title == "NLIStatementOutput":
            statement = given["statements"][0]
            verdict = int(flip(given["context"] + statement) if coin else statement in given["context"])
            return Action(content=json.dumps({"statements": [
                {"statement": statement, "reason": "scripted", "verdict": verdict}]}))
        return Action(status=400)

    return script


@pytest.mark.parametrize("coin", [False, True], ids=["perfect", "coin"])
def test_a_scripted_judge_through_ragas(coin, typed, minilm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "cache"))
    items = build_items(cmrc_rows(), passages=15, seed=0)
    # answer relevancy embeds one text per call: MiniLM is quick at that, USE streams all its weights per call
    minilm = {"library": "flagembedding", "model": minilm_dir, "revision": None, "pooling": "mean",
              "query_max_len": 64, "passage_max_len": 64, "batch_size": 8}
    with FakeOpenAI(scripted_judge(items, coin)) as server:
        params = typed({"score": {"generation": {"cosine_embedder": minilm},
                                  "rag": {"judge": {"kind": "endpoint", "base_url": server.base_url, "model": "judge",
                                                    "api_key_env": None, "mode": "json_schema", "max_tokens": 256,
                                                    "strictness": 1}}},
                        "serving": {"timeout_s": 300, "max_retries": 2, "concurrency": 8}})
        stage = StageReport("judge_set")
        verdicts = judge_scores(params.score.rag.judge, None, params.serving, params.score.generation.cosine_embedder,
                                items, tmp_path / "log", stage)
    report = judge_report(items, verdicts)
    for metric in ("faithfulness", "answer_relevancy"):
        assert report[metric]["n"] == len(items) and report[metric]["judged"] == 1.0, stage.extra
        if not coin:
            assert report[metric]["auc"] == 1.0, report
        else:
            assert 0.3 < report[metric]["auc"] < 0.7, report
    if not coin:  # a supported statement scores 1, an unsupported 0 (relevancy's scale is the embedder's cosine)
        assert report["faithfulness"]["accuracy"] == 1.0
