"""Task metrics.

Retrieval (per query, then averaged over the eval set):

- **context recall**: share of the retrieved passages whose normalised Levenshtein
  similarity to the reference passage exceeds a threshold (0.5). Computed with
  ragas' ``NonLLMContextRecall``, which is the same number when one reference
  passage is judged against the top-1 retrieved passage (tested).
- **context relevance**: share of the retrieved passages' sentences (split on
  ``。``) that occur exactly among the reference's sentences. English text has no ``。``, so
  there a passage is one sentence and, at top-1, relevance is hit@1 (docs/metrics.md).
- **context relevance (sentences)**: the same with a language-aware split (``。！？!?`` and a
  ``.`` before a space or the end, so ``3.5`` stays whole), beside the brief's.
- **hit@k** (= recall@k with one relevant passage), **MRR@k**, **nDCG@k**: from
  the rank of the reference passage among the retrieved ones (exact text match;
  knowledge-base lines are unique).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=4)
def _ragas_context_recall(threshold: float):
    with warnings.catch_warnings():
        # ragas 0.4 flags every `ragas.metrics` import as moving to `ragas.metrics.collections`,
        # which has no NonLLMContextRecall yet.
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.metrics import NonLLMContextRecall

    return NonLLMContextRecall(threshold=threshold)


def context_recall(retrieved: Sequence[str], reference: str, threshold: float = 0.5) -> float:
    """ragas' non-LLM context recall of one reference passage against ``retrieved``."""
    from ragas.dataset_schema import SingleTurnSample

    if not retrieved:
        return 0.0
    sample = SingleTurnSample(retrieved_contexts=list(retrieved), reference_contexts=[reference])
    return float(_ragas_context_recall(threshold).single_turn_score(sample))


def levenshtein_similarity(a: str, b: str) -> float:
    from rapidfuzz.distance import Levenshtein

    return 1.0 - Levenshtein.normalized_distance(a, b)


def split_sentences(text: str, separator: str = "。") -> list[str]:
    return [s.strip() for s in text.split(separator) if s.strip()]


_SENTENCE_END = re.compile(r"(?<=[。！？!?])|(?<=[.;；])(?=\s|$)")


def split_sentences_multilingual(text: str) -> list[str]:
    """Sentences of Chinese, English or mixed text: after ``。！？!?``, and after ``.`` or ``;`` followed by a
    space or the end (``3.5`` and ``e.g.,`` stay whole), terminator kept."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def context_relevance(retrieved: Sequence[str], reference: str, separator: str | None = "。") -> float:
    """Share of the sentences of ``retrieved`` that occur exactly among the reference's sentences (split on
    ``separator``; None: ``split_sentences_multilingual``)."""
    split = split_sentences_multilingual if separator is None else lambda t: split_sentences(t, separator)
    ref = set(split(reference))
    sentences = [s for passage in retrieved for s in split(passage)]
    if not sentences:
        return 0.0
    return sum(s in ref for s in sentences) / len(sentences)


def rank_of(retrieved: Sequence[str], gold: str) -> int | None:
    """1-based rank of ``gold`` in ``retrieved``, or None when it was not retrieved."""
    for i, text in enumerate(retrieved, start=1):
        if text == gold:
            return i
    return None


def hit_at(rank: int | None, k: int) -> float:
    return float(rank is not None and rank <= k)


def mrr_at(rank: int | None, k: int) -> float:
    return 1.0 / rank if rank is not None and rank <= k else 0.0


def ndcg_at(rank: int | None, k: int) -> float:
    """nDCG@k with one relevant passage (the ideal DCG is 1)."""
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def retrieval_scores(retrieved: Sequence[str], gold: str, *, context_top_n: int, hit_ks: Sequence[int],
                     rank_k: int, threshold: float, separator: str) -> dict[str, float]:
    """All retrieval metrics for one query; ``retrieved`` is ranked best first."""
    top = list(retrieved[:context_top_n])
    rank = rank_of(retrieved, gold)
    scores = {
        "context_recall": context_recall(top, gold, threshold),
        "context_relevance": context_relevance(top, gold, separator),
        "context_relevance_sentences": context_relevance(top, gold, None),
    }
    scores.update({f"hit@{k}": hit_at(rank, k) for k in hit_ks})
    scores[f"mrr@{rank_k}"] = mrr_at(rank, rank_k)
    scores[f"ndcg@{rank_k}"] = ndcg_at(rank, rank_k)
    return scores


def mean_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def percentiles(rows: Sequence[dict], key: str, name: str) -> dict[str, float]:
    """``{name}_p50`` and ``{name}_p95`` (nearest rank) of what ``rows`` recorded under ``key`` (``{}`` where
    none did); a name ending in ``_s`` (seconds) keeps it last: ``rerank_p50_s``."""
    values = sorted(r[key] for r in rows if r.get(key) is not None)
    if not values:
        return {}
    stem, unit = (name[:-2], "_s") if name.endswith("_s") else (name, "")

    def at(q: float) -> float:
        return values[max(0, math.ceil(q * len(values)) - 1)]

    return {f"{stem}_p50{unit}": round(at(0.50), 5), f"{stem}_p95{unit}": round(at(0.95), 5)}


# --- generation (reading comprehension) ---------------------------------------------------

def exact_match(prediction: str, gold: str) -> float:
    """1 if the stripped prediction equals the stripped gold answer (the brief's EM: the first gold answer)."""
    return float(prediction.strip() == gold.strip())


def exact_match_any(prediction: str, golds: Sequence[str]) -> float:
    """1 if the stripped prediction equals any of the annotators' answers (``em_any``; CMRC has up to 3)."""
    return max((exact_match(prediction, g) for g in golds), default=0.0)


def origin_score(prediction: str, passage: str) -> float:
    """1 if every whitespace-separated piece of the prediction occurs in the passage.

    Chinese text without spaces is one piece, so the whole answer must be a substring.
    An empty prediction scores 0: nothing of it comes from the passage.
    """
    pieces = prediction.split()
    return float(bool(pieces) and all(p in passage for p in pieces))
