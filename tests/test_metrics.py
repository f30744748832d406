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
    assert first == {"context_recall": 1.0, "context_relevance": 1.0, "hit@1": 1.0, "hit@5": 1.0,
                     "mrr@10": 1.0, "ndcg@10": 1.0}
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


def test_cosine_scores_clip_and_batch():
    import numpy as np

    from raglab.evaluation.metrics import cosine_scores

    class Fixed:
        vectors = {"a": [1, 0], "b": [0, 1], "c": [-1, 0], "d": [0.6, 0.8]}
        calls = 0

        def encode_corpus(self, texts):
            Fixed.calls += 1
            return np.array([self.vectors.get(t, [1, 0]) for t in texts], dtype=np.float32)

    assert cosine_scores(Fixed(), ["a", "a", "a", "", "d"], ["a", "b", "c", "a", "a"]) == pytest.approx(
        [1.0, 0.0, 0.0, 0.0, 0.6])
    assert Fixed.calls == 2  # predictions and golds each encoded in one batched call
