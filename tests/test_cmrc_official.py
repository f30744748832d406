"""CMRC 2018's official EM and F1 (raglab.evaluation.cmrc_official) on cases worked out by hand."""

import pytest

from raglab.evaluation.answers import exact_scores
from raglab.evaluation.cmrc_official import em_official, f1_official, longest_common_run, mixed_segmentation


def test_mixed_segmentation_chinese_characters_english_words_and_digits():
    assert mixed_segmentation(" 1998年5月，Hello World发布 ") == ["1998", "年", "5", "月", "，", "hello", "world",
                                                                "发", "布"]
    assert mixed_segmentation("《红楼梦》3.5亿", drop_punctuation=True) == ["红", "楼", "梦", "3.5", "亿"]
    assert mixed_segmentation("don't stop, now") == ["don't", "stop", ",", "now"]


def test_longest_common_run_is_contiguous_not_a_subsequence():
    assert longest_common_run(list("甲乙丙丁"), list("甲乙X丙丁")) == 2  # a subsequence would be 4
    assert longest_common_run(list("abc"), list("xyz")) == 0
    assert longest_common_run([], list("abc")) == 0


@pytest.mark.parametrize("prediction, golds, f1", [
    # trial-style gold, validation-style short answer: 11 of 18 characters after punctuation is dropped,
    # P = 11/11, R = 11/18, F1 = 22/29
    ("水枪、小枪、锤子或是水炸弹", ["玩家以水枪、小枪、锤子或是水炸弹泡封敌人"], 22 / 29),
    # English words as tokens: run "eiffel tower" = 2, P = 2/4, R = 2/3, F1 = 4/7
    ("Eiffel Tower in Paris", ["the Eiffel Tower"], 4 / 7),
    # mixed: [1998, 年] within [1998, 年, 5, 月]: P = 1/2, R = 1, F1 = 2/3
    ("1998年5月", ["1998年"], 2 / 3),
    # a run, not a subsequence: 2 of 5 and 2 of 4, F1 = 2 * 0.4 * 0.5 / 0.9 = 4/9
    ("甲乙X丙丁", ["甲乙丙丁"], 4 / 9),
    # the best over the golds
    ("北京市", ["北京", "北京市", "中国"], 1.0),
    ("", ["北京"], 0.0),
    ("上海", ["北京"], 0.0),
])
def test_f1_hand_worked(prediction, golds, f1):
    assert f1_official(prediction, golds) == pytest.approx(f1)


@pytest.mark.parametrize("prediction, golds, em", [
    ("红楼梦", ["《红楼梦》"], 1.0),              # the punctuation list goes
    ("Hello World", [" hello world "], 1.0),    # case and outer spaces go
    ("hello world.", ["hello world"], 0.0),     # ASCII '.' is not in the script's list: it stays
    ("北京市", ["北京", "北京市"], 1.0),          # any gold answer
    ("北京", ["北京市"], 0.0),
    ("1,000", ["1000"], 0.0),                  # ',' stays too
])
def test_em_hand_worked(prediction, golds, em):
    assert em_official(prediction, golds) == em


def test_exact_scores_beside_the_briefs_em():
    # the brief's EM wants the first gold exactly; the official metrics forgive punctuation and take any gold
    assert exact_scores("红楼梦", "《红楼梦》", ["《红楼梦》", "红楼梦的作者"]) == {
        "em": 0.0, "em_any": 0.0, "em_official": 1.0, "f1": 1.0}
