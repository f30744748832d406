"""Contrastive training data for the embedder: (query, positives, negatives) rows.

The protocol (financial-qa-10K): ``question`` is the query, ``context`` the
positive passage; the rows are split train/test with a seed (the split of the
raw rows, as ``datasets.Dataset.train_test_split`` does it, so the test split is
the reference one); invalid rows are then dropped and counted; each training
row gets ``num_negatives`` negatives, either drawn at random from the other
training passages or mined with the base embedder from a rank window (what
FlagEmbedding's hard-negative mining does). A negative is never textually equal
to the row's positive, and the knowledge base of an eval split holds each
passage once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from raglab.core.report import StageReport

log = logging.getLogger("raglab")


@dataclass
class QAPair:
    query: str
    passage: str
    row: int  # 1-based row in the source file, for error messages and traceability


KB_LAYOUTS = ("unique", "per_query")


@dataclass
class EvalSplit:
    pairs: list[QAPair]
    kb: list[str]  # unique passages, in order of first appearance

    def rows(self) -> list[dict]:
        return [{"query": p.query, "corpus": [p.passage]} for p in self.pairs]

    def kb_lines(self, layout: str = "unique") -> list[str]:
        """The knowledge-base file: each passage once (``unique``), or one line per query, repeats
        kept (``per_query``: the brief's reference layout, a 700-line file for 694 passages)."""
        if layout not in KB_LAYOUTS:
            raise ValueError(f"knowledge-base layout must be one of {KB_LAYOUTS}, got {layout!r}")
        return self.kb if layout == "unique" else [p.passage for p in self.pairs]


@dataclass
class ContrastiveData:
    train: list[QAPair]
    negatives: list[list[str]] = field(default_factory=list)

    def rows(self, prompt: str) -> list[dict]:
        return [
            {"query": p.query, "pos": [p.passage], "neg": negs, "prompt": prompt}
            for p, negs in zip(self.train, self.negatives)
        ]


def seeded_split(n: int, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a seeded train/test split of ``n`` rows (``datasets``' own algorithm)."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    import datasets

    parts = datasets.Dataset.from_dict({"i": list(range(n))}).train_test_split(test_size=test_size, seed=seed)
    return list(parts["train"]["i"]), list(parts["test"]["i"])


def seeded_group_split(keys: Sequence[str], test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Like ``seeded_split``, but over the distinct ``keys`` (e.g. passages): all rows with one key
    land on the same side, so no passage of a test query is trained on."""
    groups = list(dict.fromkeys(keys))
    _, test_g = seeded_split(len(groups), test_size, seed)
    test_keys = {groups[i] for i in test_g}
    return [i for i, k in enumerate(keys) if k not in test_keys], [i for i, k in enumerate(keys) if k in test_keys]


def split_by(keys: Sequence[str], test_size: float, seed: int, by: str) -> tuple[list[int], list[int]]:
    """build_embed_negatives' split of rows with these passage ``keys``: by ``row`` (``seeded_split``) or by
    ``passage`` (``seeded_group_split``); build_chunks takes the same training side of a table. ``test_size`` 1:
    every row tested (a source that only gives the eval split, with ``train_on: questions``)."""
    if test_size == 1:
        return [], list(range(len(keys)))
    return seeded_group_split(keys, test_size, seed) if by == "passage" else seeded_split(len(keys), test_size, seed)


def validate_pairs(rows: Sequence[dict], indices: Sequence[int], report: StageReport,
                   query_field: str = "question", passage_field: str = "context") -> list[QAPair]:
    """Keep rows with a non-empty query and passage; count the others in ``report``."""
    kept = []
    for i in indices:
        row = rows[i]
        query, passage = row.get(query_field) or "", row.get(passage_field) or ""
        if not query.strip():
            report.drop(f"empty_{query_field}")
        elif not passage.strip():
            report.drop(f"empty_{passage_field}")
        elif "\n" in passage:
            report.drop(f"newline_in_{passage_field}")  # a knowledge base holds one passage per line
        else:
            kept.append(QAPair(query, passage, row=i + 1))
    return kept


def eval_split(pairs: list[QAPair]) -> EvalSplit:
    return EvalSplit(pairs, list(dict.fromkeys(p.passage for p in pairs)))


def random_negatives(pairs: Sequence[QAPair], k: int, seed: int) -> list[list[str]]:
    """``k`` distinct random passages per row from the other rows, never equal to its positive."""
    pool = list(dict.fromkeys(p.passage for p in pairs))
    if len(pool) <= k:
        raise ValueError(f"need more than {k} distinct passages to draw {k} negatives, have {len(pool)}")
    rng = random.Random(seed)
    out = []
    for p in pairs:
        # Drawing k+1 guarantees k left after removing the positive, which occurs at most once in the pool.
        negs = [c for c in rng.sample(pool, k + 1) if c != p.passage][:k]
        out.append(negs)
    return out


def mine_hard_negatives(pairs: Sequence[QAPair], embedder, k: int, rank_window: Sequence[int], seed: int,
                        max_score_ratio: float | None = None) -> tuple[list[list[str]], dict[str, int]]:
    """Negatives sampled from ranks ``[lo, hi)`` of the base embedder's search over the
    training passages, skipping the positive.

    With ``max_score_ratio``, a candidate that scores above that share of the positive's own
    score is skipped as a likely false negative (positive-aware mining, as in NV-Retriever):
    financial-qa-10K has many near-identical passages from different filings. Rows whose
    window holds fewer than ``k`` candidates are topped up with random passages. The stats
    count the rows topped up and the candidates skipped."""
    from raglab.retriever.search import DenseIndex, encode_passages, encode_queries

    lo, hi = rank_window
    if not 0 <= lo < hi:
        raise ValueError(f"hard-negative rank window must satisfy 0 <= lo < hi, got {rank_window}")
    pool = list(dict.fromkeys(p.passage for p in pairs))
    if len(pool) <= k:
        raise ValueError(f"need more than {k} distinct passages to mine {k} negatives, have {len(pool)}")
    log.info("mining hard negatives: %d queries over %d passages, ranks [%d, %d)", len(pairs), len(pool), lo, hi)
    passage_vectors = encode_passages(embedder, pool)
    query_vectors = encode_queries(embedder, [p.query for p in pairs])
    scores, ids = DenseIndex(passage_vectors).search(query_vectors, hi)
    position = {text: i for i, text in enumerate(pool)}
    rng = random.Random(seed)
    out, stats = [], {"topped_up_with_random": 0, "skipped_as_false_negative": 0}
    for p, q, row_scores, ranked in zip(pairs, query_vectors, scores, ids):
        ceiling = float("inf")
        if max_score_ratio is not None:
            ceiling = max_score_ratio * float(q @ passage_vectors[position[p.passage]])
        window = []
        for score, j in zip(row_scores[lo:hi], ranked[lo:hi]):
            if j < 0 or pool[j] == p.passage:
                continue
            if score > ceiling:
                stats["skipped_as_false_negative"] += 1
                continue
            window.append(pool[j])
        negs = rng.sample(window, k) if len(window) >= k else list(window)
        if len(negs) < k:
            stats["topped_up_with_random"] += 1
            taken = set(negs) | {p.passage}
            rest = [c for c in pool if c not in taken]
            negs += rng.sample(rest, k - len(negs))
        out.append(negs)
    return out, stats


def beir_files(split: EvalSplit) -> tuple[list[dict], list[dict], list[str]]:
    """BEIR-style ``queries``, ``corpus`` and ``qrels`` (TSV lines) for an eval split."""
    doc_id = {text: f"d{i}" for i, text in enumerate(split.kb)}
    queries = [{"_id": f"q{i}", "text": p.query} for i, p in enumerate(split.pairs)]
    corpus = [{"_id": doc_id[t], "title": "", "text": t} for t in split.kb]
    qrels = ["query-id\tcorpus-id\tscore"] + [
        f"q{i}\t{doc_id[p.passage]}\t1" for i, p in enumerate(split.pairs)
    ]
    return queries, corpus, qrels



def spread_repeated_passages(buckets: list[list[dict]]) -> tuple[list[list[dict]], int]:
    """Training files (each batch is drawn from one) in which no positive passage appears twice: a passage's
    second question in a batch would be an in-batch negative of its first (a false negative; two questions a chunk
    make it common, and length buckets put a chunk's questions in one bucket). A row whose passage its bucket
    already holds moves to the nearest bucket that does not; one bucket is first split by how many questions of
    the row's passage came before it. Returns the buckets and how many rows stay beside a repeat (a passage with
    more questions than there are buckets)."""
    if len(buckets) == 1:
        seen: dict[str, int] = {}
        by_turn: list[list[dict]] = []
        for row in buckets[0]:
            turn = seen[row["pos"][0]] = seen.get(row["pos"][0], -1) + 1
            if turn == len(by_turn):
                by_turn.append([])
            by_turn[turn].append(row)
        buckets = by_turn
    out: list[list[dict]] = [[] for _ in buckets]
    held: list[set[str]] = [set() for _ in buckets]
    beside = 0
    for b, bucket in enumerate(buckets):
        for row in bucket:
            passage = row["pos"][0]
            free = [c for c in sorted(range(len(buckets)), key=lambda c: (abs(c - b), c)) if passage not in held[c]]
            target = free[0] if free else b
            beside += not free
            out[target].append(row)
            held[target].add(passage)
    return out, beside
