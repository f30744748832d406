"""Can a judge tell a faithful answer from an unfaithful one? A judge-validation set, and a judge's score on it.

The set is built from CMRC passages (a seeded sample of one split), one question per passage, with answers
whose labels are known by construction:

=================  ============  ========  ==================================================================
kind               faithfulness  relevant  the answer
=================  ============  ========  ==================================================================
``gold``           1             1         the question's gold span (in the passage, answers the question)
``other_question`` 1             0         the gold span of another question on the same passage
``changed_number`` 0             1         the gold span with every digit changed, or without digits its last
                                           Chinese character replaced by the next one (no longer in the passage)
``other_passage``  0             0         a gold span of a question on another passage (not in this one)
=================  ============  ========  ==================================================================

It is a deterministic function of the mirror, the split, the sample size and the seed, so it is rebuilt, not
committed (the repo holds no rows of the real data). ``judge_report`` scores a judge's verdicts on it: per
metric, the ROC AUC against the labels, the accuracy at 0.5, and the share of items given a verdict.
``python -m raglab.experiments.judge_validation`` builds the set and runs a judge over it as score_rag does.
"""

from __future__ import annotations

import random
from collections import defaultdict

from raglab.evaluation.judge import METRICS

LABELS = {"gold": (1, 1), "other_question": (1, 0), "changed_number": (0, 1), "other_passage": (0, 0)}


def change_digits(text: str) -> str:
    """Every ASCII digit d -> d+1 mod 10; without digits, the last CJK character -> the next code point."""
    changed = "".join(str((int(c) + 1) % 10) if c.isascii() and c.isdigit() else c for c in text)
    if changed == text:
        cjk = [i for i, c in enumerate(text) if "\u4e00" <= c < "\u9fff"]
        if cjk:
            changed = text[:cjk[-1]] + chr(ord(text[cjk[-1]]) + 1) + text[cjk[-1] + 1:]
    return changed


def build_items(rows: list[dict], passages: int, seed: int) -> list[dict]:
    """The set's items from CMRC rows (``id, context, question, answers``): ``passages`` passages, seeded."""
    by_passage: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["question"].strip() and row["answers"] and row["answers"][0].strip():
            by_passage[row["context"]].append(row)
    contexts = sorted(by_passage)
    rng = random.Random(seed)
    chosen = rng.sample(contexts, min(passages, len(contexts)))
    items = []
    for context in chosen:
        row, *others = by_passage[context]
        gold = row["answers"][0].strip()
        answers = {"gold": gold}
        other = next((o["answers"][0].strip() for o in others if o["answers"][0].strip() not in gold
                      and gold not in o["answers"][0]), None)
        if other:
            answers["other_question"] = other
        changed = change_digits(gold)
        if changed != gold and changed not in context:
            answers["changed_number"] = changed
        for _ in range(20):  # a span of another passage that this one does not contain
            candidate = by_passage[rng.choice(contexts)][0]["answers"][0].strip()
            if candidate not in context:
                answers["other_passage"] = candidate
                break
        for kind, answer in answers.items():
            faithful, relevant = LABELS[kind]
            items.append({"id": f"{row['id']}|{kind}", "kind": kind, "question": row["question"], "passages": [context],
                          "prediction": answer, "faithfulness": faithful, "answer_relevancy": relevant})
    return items


def roc_auc(labels: list[int], scores: list[float]) -> float | None:
    """The probability that a positive item scores above a negative one (ties count half); None without both."""
    pos = [s for label, s in zip(labels, scores) if label == 1]
    neg = [s for label, s in zip(labels, scores) if label == 0]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def judge_report(items: list[dict], verdicts: list[dict]) -> dict:
    """Per metric: n, the share given a verdict, ROC AUC and accuracy at 0.5 (over the items given one), and the
    mean verdict per kind of item (which kind of wrong answer the judge lets through)."""
    out = {}
    for metric in METRICS:
        pairs = [(item[metric], v[metric]) for item, v in zip(items, verdicts) if item[metric] is not None]
        given = [(label, score) for label, score in pairs if score is not None]
        labels, scores = [label for label, _ in given], [score for _, score in given]
        auc = roc_auc(labels, scores)
        out[metric] = {"n": len(pairs), "judged": round(len(given) / len(pairs), 5) if pairs else None,
                       "auc": None if auc is None else round(auc, 5),
                       "accuracy": round(sum((s >= 0.5) == (y == 1) for y, s in given) / len(given), 5)
                       if given else None}
        by_kind = {}
        for kind in LABELS:
            scores = [v[metric] for item, v in zip(items, verdicts) if item["kind"] == kind and v[metric] is not None]
            if scores:
                by_kind[kind] = round(sum(scores) / len(scores), 5)
        out[metric]["mean_by_kind"] = by_kind
    return out
