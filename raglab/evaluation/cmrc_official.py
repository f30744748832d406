"""CMRC 2018's own metrics, as its evaluation script (``cmrc2018_evaluate.py``, the dataset's repository) computes
them, written here from its definition: ``em_official`` and ``f1``, each the maximum over the gold answers.

- **Mixed segmentation.** The text is lower-cased and stripped; every CJK character (U+4E00-U+9FA5) and every
  character of the script's punctuation list is a token of its own; a run of other characters (Latin words,
  digits, spaces, ASCII punctuation) is split as a word tokenizer would (the script uses ``nltk.word_tokenize``:
  here, words and each ASCII punctuation mark). F1 drops the punctuation list's tokens first.
- **F1** is over the *longest common substring* of the two token lists (the script's ``find_lcs`` keeps the
  longest contiguous run, not a subsequence): precision = its length / prediction tokens, recall = its length /
  gold tokens.
- **EM** compares the lower-cased, stripped texts with the punctuation list's characters removed (spaces inside
  and ASCII punctuation are kept, as in the script).

The brief's EM (``raglab.evaluation.metrics.exact_match``) is stricter: the stripped prediction equals the
first gold answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# the script's sp_char list, as it is (ASCII punctuation other than these is kept, inside words' tokens)
PUNCTUATION = frozenset(["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“",
                         "”", "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"])
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORD = re.compile(r"\w+(?:[.,'’]\w+)*|[^\w\s]")  # words (3.5, 1,000, don't) and single punctuation marks


def mixed_segmentation(text: str, drop_punctuation: bool = False) -> list[str]:
    """Each CJK character and each punctuation-list character a token; other runs split into words."""
    tokens, run = [], []
    for char in str(text).lower().strip():
        if drop_punctuation and char in PUNCTUATION:
            continue
        if _CJK.match(char) or char in PUNCTUATION:
            tokens += _WORD.findall("".join(run))
            run = []
            tokens.append(char)
        else:
            run.append(char)
    return tokens + _WORD.findall("".join(run))


def remove_punctuation(text: str) -> str:
    return "".join(c for c in str(text).lower().strip() if c not in PUNCTUATION)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of tokens that ``a`` and ``b`` share."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def f1_official(prediction: str, golds: Sequence[str]) -> float:
    """CMRC's F1: the best over ``golds`` of the harmonic mean of precision and recall of the longest common run."""
    predicted = mixed_segmentation(prediction, drop_punctuation=True)
    scores = [0.0]
    for gold in golds:
        reference = mixed_segmentation(gold, drop_punctuation=True)
        common = longest_common_run(reference, predicted)
        if common:
            precision, recall = common / len(predicted), common / len(reference)
            scores.append(2 * precision * recall / (precision + recall))
    return max(scores)


def em_official(prediction: str, golds: Sequence[str]) -> float:
    """CMRC's EM: 1 if the prediction equals some gold once both lose the punctuation list's characters."""
    predicted = remove_punctuation(prediction)
    return float(any(remove_punctuation(g) == predicted for g in golds))
