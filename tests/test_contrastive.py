import zlib

import numpy as np
import pytest

from raglab.core.report import StageReport
from raglab.retriever.data import (
    QAPair,
    beir_files,
    eval_split,
    mine_hard_negatives,
    random_negatives,
    seeded_split,
    validate_pairs,
)


def make_pairs(n, shared_every=0):
    pairs = [QAPair(f"question {i}", f"passage number {i} about topic {i % 7}", row=i + 1) for i in range(n)]
    if shared_every:
        for i in range(0, n, shared_every):  # several questions share one passage, as in the real CSV
            pairs[i + 1 if i + 1 < n else i].passage = pairs[i].passage
    return pairs


def test_split_is_seeded_sized_and_disjoint():
    tr1, te1 = seeded_split(7000, 0.1, 1314)
    tr2, te2 = seeded_split(7000, 0.1, 1314)
    assert (tr1, te1) == (tr2, te2)
    assert len(te1) == 700 and len(tr1) == 6300
    assert set(tr1).isdisjoint(te1) and set(tr1) | set(te1) == set(range(7000))
    assert seeded_split(7000, 0.1, 1315)[1] != te1


@pytest.mark.parametrize("bad", [0, 1, 1.5])
def test_split_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="test_size"):
        seeded_split(10, bad, 0)


def test_invalid_rows_are_dropped_and_counted():
    rows = [
        {"question": "q1", "context": "p1"},
        {"question": "  ", "context": "p2"},
        {"question": "q3", "context": ""},
        {"question": None, "context": None},
        {"question": "q5", "context": "two\nlines"},
        {"question": "q6", "context": "p6"},
    ]
    report = StageReport("t")
    kept = validate_pairs(rows, range(len(rows)), report)
    assert [(p.query, p.row) for p in kept] == [("q1", 1), ("q6", 6)]
    assert report.dropped == {"empty_question": 2, "empty_context": 1, "newline_in_context": 1}


def test_random_negatives_protocol():
    pairs = make_pairs(60, shared_every=5)
    negs = random_negatives(pairs, 10, seed=1314)
    assert negs == random_negatives(pairs, 10, seed=1314)
    assert negs != random_negatives(pairs, 10, seed=1)
    for p, n in zip(pairs, negs):
        assert len(n) == 10 and len(set(n)) == 10
        assert p.passage not in n  # never the row itself, nor a row with the same passage text


def test_random_negatives_needs_enough_passages():
    with pytest.raises(ValueError, match="need more than 10 distinct passages"):
        random_negatives(make_pairs(10), 10, seed=0)


def test_knowledge_base_is_unique_and_ordered():
    pairs = make_pairs(20, shared_every=4)
    split = eval_split(pairs)
    assert len(split.kb) == len(set(split.kb)) == len({p.passage for p in pairs})
    assert split.kb[0] == pairs[0].passage
    assert split.rows()[3] == {"query": pairs[3].query, "corpus": [pairs[3].passage]}
    queries, corpus, qrels = beir_files(split)
    assert len(queries) == 20 and len(corpus) == len(split.kb) and len(qrels) == 21
    doc = {c["_id"]: c["text"] for c in corpus}
    for q, line in zip(pairs, qrels[1:]):
        assert doc[line.split("\t")[1]] == q.passage


class RandomVectorEmbedder:
    """Test double with FlagModel's encode_* interface: a fixed random unit vector per text (no ties)."""

    def _encode(self, texts):
        vecs = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=32) for t in texts]
        out = np.array(vecs, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    encode_queries = encode_corpus = _encode


def test_hard_negatives_come_from_the_rank_window_and_exclude_the_positive():
    pairs = make_pairs(80, shared_every=6)
    emb = RandomVectorEmbedder()
    negs, stats = mine_hard_negatives(pairs, emb, 3, (2, 12), seed=0)
    assert stats == {"topped_up_with_random": 0, "skipped_as_false_negative": 0}
    pool = list(dict.fromkeys(p.passage for p in pairs))
    q = emb.encode_queries([p.query for p in pairs])
    d = emb.encode_corpus(pool)
    scores = q @ d.T
    order = np.argsort(-scores, axis=1, kind="stable")
    # faiss and numpy round differently: the data must have no near-tie at the window's edges, or the
    # window would depend on the CPU's arithmetic (1e-5 is ~300 float32 ulps of these scores; a 32-term
    # dot product rounds by a few)
    ranked_scores = np.take_along_axis(scores, order, axis=1)
    assert np.abs(ranked_scores[:, [1, 11]] - ranked_scores[:, [2, 12]]).min() > 1e-5
    for p, n, ranked in zip(pairs, negs, order):
        assert len(n) == 3 and len(set(n)) == 3 and p.passage not in n
        window = {pool[j] for j in ranked[2:12]}
        assert set(n) <= window
    assert negs == mine_hard_negatives(pairs, emb, 3, (2, 12), seed=0)[0]


def test_hard_negatives_top_up_a_short_window_with_random_passages():
    pairs = make_pairs(30)
    negs, stats = mine_hard_negatives(pairs, RandomVectorEmbedder(), 5, (0, 3), seed=0)
    assert stats["topped_up_with_random"] == 30
    assert all(len(set(n)) == 5 and p.passage not in n for p, n in zip(pairs, negs))


class NearPositiveEmbedder(RandomVectorEmbedder):
    """Each query lands near its own passage (cosine ~0.9), so positives score high, as after training."""

    def __init__(self, pairs):
        self.passage_of = {p.query: p.passage for p in pairs}

    def encode_queries(self, queries):
        rng = np.random.default_rng(0)
        v = self._encode([self.passage_of[q] for q in queries]) + 0.3 * rng.normal(size=(len(queries), 32)) / np.sqrt(32)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_hard_negatives_skip_candidates_scoring_close_to_the_positive():
    pairs = make_pairs(80)
    emb = NearPositiveEmbedder(pairs)
    pool = [p.passage for p in pairs]
    q, d = emb.encode_queries([p.query for p in pairs]), emb.encode_corpus(pool)
    ratio = 0.4  # at 0.3 one candidate scored within 3e-6 of the ceiling: a coin toss between CPUs
    negs, stats = mine_hard_negatives(pairs, emb, 2, (0, 40), seed=0, max_score_ratio=ratio)
    assert stats["topped_up_with_random"] == 0
    skipped = 0
    for i, n in enumerate(negs):
        ceiling = ratio * float(q[i] @ d[i])
        assert all(float(q[i] @ d[pool.index(text)]) <= ceiling + 1e-6 for text in n)
        ranked = np.argsort(-(q[i] @ d.T), kind="stable")[:40]
        assert min(abs(float(q[i] @ d[j]) - ceiling) for j in ranked) > 1e-5  # no near-tie with the ceiling (as above)
        skipped += sum(j != i and float(q[i] @ d[j]) > ceiling for j in ranked)
    assert stats["skipped_as_false_negative"] == skipped > 0
    assert negs != mine_hard_negatives(pairs, emb, 2, (0, 40), seed=0)[0]


def test_hard_negative_window_is_validated():
    with pytest.raises(ValueError, match="rank window"):
        mine_hard_negatives(make_pairs(30), RandomVectorEmbedder(), 3, (5, 5), seed=0)


def test_knowledge_base_layouts():
    pairs = make_pairs(12, shared_every=3)
    split = eval_split(pairs)
    assert split.kb_lines("unique") == split.kb and len(split.kb) < 12
    assert split.kb_lines("per_query") == [p.passage for p in pairs]
    with pytest.raises(ValueError, match="layout"):
        split.kb_lines("sorted")
