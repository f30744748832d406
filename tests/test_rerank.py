"""The second stage of retrieval: train_rerank's cross-encoder learns to put a query's positive above its
negatives, the rerank step keeps the best top_k above the threshold, and params that cannot work are refused."""

from __future__ import annotations

import time

import pytest

from raglab.core.formats import write_jsonl
from raglab.retriever.rerank import CrossEncoderReranker, RerankerConfig

TOPICS = ["revenue", "debt", "cash flow", "gross margin", "income tax", "leases", "goodwill", "dividends",
          "inventory", "pensions", "share buybacks", "capital spending"]


def rows():
    """Each topic's question, its passage, and three other topics' passages as negatives."""
    passage = {t: f"The company discussed its {t} in the annual report." for t in TOPICS}
    return [{"query": f"What did the company say about {t}?", "pos": [passage[t]],
             "neg": [passage[TOPICS[(i + d) % len(TOPICS)]] for d in (1, 2, 3)]} for i, t in enumerate(TOPICS)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, minilm_dir, typed):
    from raglab.retriever.train_rerank import train_reranker

    tmp = tmp_path_factory.mktemp("rerank")
    write_jsonl(tmp / "train.jsonl", rows())
    p = typed({"train_rerank": {"negatives": "rows", "train_group_size": 4, "epochs": 10, "batch_size": 4,
                                "learning_rate": 1.0e-4, "query_max_len": 32, "passage_max_len": 32,
                                "mixed_precision": "fp32", "logging_steps": 1, "warmup_steps": 0}})
    summary = train_reranker(RerankerConfig.of(p.reranker, model=minilm_dir, revision=None), p.train_rerank,
                             str(tmp / "train.jsonl"), tmp / "reranker", tmp / "live", tmp / "checkpoints")
    return tmp / "reranker", summary, tmp


def scores(model_dir, typed, precision: str = "fp32") -> list[list[float]]:
    """Per training query: the scores of its positive, then of its negatives."""
    reranker = CrossEncoderReranker(RerankerConfig.of(typed().reranker, model=str(model_dir), revision=None),
                                    precision)
    return [reranker.scores(r["query"], r["pos"] + r["neg"]) for r in rows()]


def margins(model_dir, typed, precision: str = "fp32") -> list[float]:
    """Per training query: the positive's score minus its best negative's."""
    return [s[0] - max(s[1:]) for s in scores(model_dir, typed, precision)]


def positive_ranks(query_scores: list[list[float]]) -> list[int]:
    """Per query: the positive's rank among its candidates, 0 = first (a tie counts in the positive's favour)."""
    return [sum(n > s[0] for n in s[1:]) for s in query_scores]


def chance_p_value(ranks: list[int], n_candidates: int) -> float:
    """The chance that a reranker ordering at random puts the positives this high or higher: P(sum of
    len(ranks) independent ranks, each uniform on 0..n_candidates-1, <= sum(ranks)), computed exactly. Small:
    better than chance."""
    dist = [1.0]  # dist[s] = P(the ranks so far sum to s)
    for _ in ranks:
        dist = [sum(dist[s - r] for r in range(n_candidates) if 0 <= s - r < len(dist)) / n_candidates
                for s in range(len(dist) + n_candidates - 1)]
    return sum(dist[:sum(ranks) + 1])


def test_the_chance_p_value_is_the_exact_tail_of_a_sum_of_uniform_ranks():
    from itertools import product

    assert chance_p_value([0] * 12, 4) == pytest.approx(4.0 ** -12)  # every positive first
    assert chance_p_value([3] * 12, 4) == pytest.approx(1.0)
    for observed in product(range(3), repeat=3):  # brute force over all 27 equally likely rankings
        tail = sum(sum(ranks) <= sum(observed) for ranks in product(range(3), repeat=3)) / 27
        assert chance_p_value(list(observed), 3) == pytest.approx(tail)


def test_the_reranker_learns_to_put_the_positive_first(trained, typed, minilm_dir):
    model_dir, summary, tmp = trained
    assert summary["steps"] == 30 and summary["train_rows"] == len(TOPICS)  # 3 batches of 4, 10 epochs
    assert (model_dir / "model.safetensors").is_file() and not (tmp / "checkpoints").exists()
    assert (tmp / "live" / "plots" / "metrics" / "loss.tsv").is_file()
    tuned = margins(model_dir, typed)
    assert min(tuned) > 0.05, tuned  # every positive above all its negatives, by a clear margin
    # tuned: every positive first, which ordering at random does with probability 4^-12
    assert chance_p_value(positive_ranks(scores(model_dir, typed)), 4) < 1e-6
    # MiniLM with a fresh scoring head orders no better than chance: the positives' ranks among the 4 candidates
    # are not significantly high (one-sided, 5%: a rank sum of 11 or less, against 18 by chance, would be).
    # Measured: rank sum 20, 2 positives first, p 0.74, the same in fp32 and bf16; its margins are 5e-4 to 3e-3
    # wide, far beyond how much two CPUs' fp32 kernels differ, and bf16's coarser rounding is checked as well.
    for precision in ("fp32", "bf16"):
        untuned = positive_ranks(scores(minilm_dir, typed, precision))
        assert chance_p_value(untuned, 4) > 0.05, (precision, untuned)
    assert min(margins(model_dir, typed, "bf16")) > 0  # bf16 inference (rerank.precision) keeps the order


def test_reranker_precision_is_the_weights_dtype_and_auto_follows_the_cpu_flags(minilm_dir, typed, monkeypatch):
    """rerank.precision: auto reads the CPU's bf16 flags (faked here, never the machine's own)."""
    import torch

    from raglab.core import machine

    cfg = RerankerConfig.of(typed().reranker, model=minilm_dir, revision=None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for flags, expected in (([], "fp32"), (["amx_bf16", "avx512_bf16"], "bf16")):
        monkeypatch.setattr(machine, "bf16_flags", lambda cpuinfo=None, flags=flags: flags)
        reranker = CrossEncoderReranker(cfg, "auto")
        assert reranker.precision == expected
        assert next(reranker.model.parameters()).dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[expected]


class ScriptedReranker(CrossEncoderReranker):
    """Test double: scores are given, no model; scoring a query takes at least ``delay`` seconds."""

    def __init__(self, scores: dict[str, float], delay: float = 0.0):
        self.given, self.delay, self.seconds = scores, delay, []

    def scores(self, query, passages):
        time.sleep(self.delay)
        return [self.given[p] for p in passages]


KB = ["a", "b", "c", "d"]
FIRST_STAGE = [(0, 9.0), (1, 8.0), (2, 7.0), (3, 6.0)]  # a, b, c, d
SCORES = {"a": 0.2, "b": 0.95, "c": 0.9, "d": 0.5}  # the cross-encoder's order: b, c, d, a


def test_rerank_orders_by_score_keeps_top_k_above_the_threshold_and_times_each_query(typed):
    reranker = ScriptedReranker(SCORES, delay=0.02)
    calls = []  # each call's wall time, measured around it

    def rerank(**group):
        params = typed({"rerank": group}).rerank
        start = time.perf_counter()
        ranked = reranker.rerank("q", FIRST_STAGE, KB, 3, params)
        calls.append(time.perf_counter() - start)
        return ranked

    assert rerank() == [(1, 0.95), (2, 0.9), (3, 0.5)]
    assert rerank(threshold=0.85) == [(1, 0.95), (2, 0.9)]  # the brief's filter
    assert rerank(threshold=0.99) == []
    # each query's time covers its scoring (sleep waits at least the delay) and lies within the call
    assert len(reranker.seconds) == 3
    assert all(0.02 <= s <= call for s, call in zip(reranker.seconds, calls)), (reranker.seconds, calls)


def test_fusion_with_the_first_stage_lets_it_overrule_a_weak_cross_encoder_by_its_weight(typed):
    """Cross-encoder order b, c, d, a; first stage a, b, c, d. Reciprocal-rank fusion (rrf_k 0 makes the sums
    easy): weight 0 is the cross-encoder alone; weight 1 ranks b (1/1 + 1/2) over a (1/4 + 1/1), and a over
    c; weight 3 puts the first stage's a first (1/4 + 3/1). The threshold still reads the cross-encoder's own score."""
    reranker = ScriptedReranker(SCORES)

    def order(**group):
        ranked = reranker.rerank("q", FIRST_STAGE, KB, 4, typed({"rerank": {"rrf_k": 0, **group}}).rerank)
        return "".join(KB[j] for j, _ in ranked)

    assert order(first_stage_weight=0.0) == "bcda"
    assert order(first_stage_weight=1.0) == "bacd"  # b 1 + 1/2, a 1/4 + 1, c 1/2 + 1/3, d 1/3 + 1/4
    assert order(first_stage_weight=3.0) == "abcd"  # a 3.25, b 1 + 3/2, c 1/2 + 1, d 1/3 + 3/4
    assert order(first_stage_weight=3.0, threshold=0.85) == "bc"


def test_reranked_retrievers_need_enough_candidates_and_known_names(typed):
    from raglab.params.schema import ParamsError

    typed({"rerank": {"candidates": 10}})  # = serve_infer.retrieval.top_k: fine
    with pytest.raises((ParamsError, ValueError),
                       match=r"rerank.candidates \(5\) must be at least serve_infer.retrieval.top_k \(10\)"):
        typed({"rerank": {"candidates": 5}})
    typed({"rerank": {"candidates": 5}, "serve_infer": {"retrieval": {"systems": ["base", "tuned"]}},
           "rag": {"retrievers": ["bm25", "hybrid"]}})  # no reranked retriever anywhere: fine
    with pytest.raises((ParamsError, ValueError), match=r"rerank.candidates \(2\) must be at least rag.rank_depth"):
        typed({"rerank": {"candidates": 2}, "serve_infer": {"retrieval": {"systems": ["tuned"], "top_k": 2}},
               "rag": {"retrievers": ["hybrid+rerank"]}})
    with pytest.raises((ParamsError, ValueError), match=r"optionally followed by \+rerank"):
        typed({"rag": {"retrievers": ["tuned+colbert"]}})


def test_retrievers_rerank_any_first_stage(trained, typed, minilm_dir):
    from raglab.retriever.systems import Retrievers

    model_dir, _, _ = trained
    kb = [r["pos"][0] for r in rows()]
    p = typed({"rerank": {"candidates": 12, "precision": "fp32"},
               "embedder": {"model": minilm_dir, "revision": None, "pooling": "mean", "query_instruction": None}})
    retrievers = Retrievers(kb, p, tuned_embedder=None, tuned_reranker=model_dir)
    assert "bm25+rerank" in retrievers.available() and "tuned+rerank" not in retrievers.available()
    queries = [r["query"] for r in rows()]
    reranked = retrievers.search("base+rerank", queries, 3)
    assert [ranking[0][0] for ranking in reranked] == list(range(len(TOPICS)))  # each query's own passage first
    assert all(len(ranking) == 3 for ranking in reranked)
    assert len(retrievers.reranker("rerank").seconds) == len(queries)
    with pytest.raises(ValueError, match="unknown retriever 'tuned"):
        retrievers.search("tuned+rerank", queries, 3)


def test_the_assistant_reranks_and_times_the_second_stage(trained, typed, minilm_dir):
    """The assistant's retrieval with a second stage: the tuned cross-encoder's order, its time in the step
    timings (the generator and the router behind the scripted OpenAI-compatible server)."""
    from fake_openai import Action, FakeOpenAI

    from raglab.assistant.system import Assistant
    from raglab.serving.client import Endpoint

    model_dir, _, _ = trained
    kb = [r["pos"][0] for r in rows()]
    with FakeOpenAI(lambda request: Action(content="Other")) as server:
        p = typed({"rerank": {"candidates": 12, "precision": "fp32"}, "rag": {"top_k": 2, "router": {"kind": "llm"}},
                   "embedder": {"model": minilm_dir, "revision": None, "pooling": "mean", "query_instruction": None}})
        assistant = Assistant(p, kb, None, None, Endpoint(server.base_url, "gen-1"), "bm25+rerank", str(model_dir))
        turn = assistant.prepare([{"role": "user", "content": rows()[4]["query"]}])
    assert turn.reply.route == "rag" and [x["text"] for x in turn.reply.passages][0] == kb[4]
    assert len(turn.reply.passages) == 2
    assert set(turn.reply.timings) == {"route_s", "retrieval_s", "rerank_s"}
    assert 0 < turn.reply.timings["rerank_s"] <= turn.reply.timings["retrieval_s"]


def test_train_rerank_disabled_trains_nothing_and_no_retriever_may_need_it(params, typed, tmp_path):
    """train_rerank.enabled false: the stage writes a note instead of a model, in no time, the retrievers offer no
    +rerank over its folder, and params in which a retriever needs the tuned cross-encoder are refused by key."""
    import json

    import yaml
    from click.testing import CliRunner

    from raglab.params.loader import merge
    from raglab.params.schema import ParamsError
    from raglab.retriever.systems import Retrievers
    from stages import train_rerank

    off = {"train_rerank": {"enabled": False}}
    fine = {"serve_infer": {"retrieval": {"systems": ["tuned"]}}, "rag": {"retrievers": ["hybrid"]},
            "assistant": {"retriever": "hybrid"}}
    for where, changes in (("serve_infer.retrieval.systems",
                            {"serve_infer": {"retrieval": {"systems": ["tuned+rerank"]}}}),
                           ("rag.retrievers", {"rag": {"retrievers": ["hybrid+rerank"]}}),
                           ("assistant.retriever", {"assistant": {"retriever": "bm25+rerank"}})):
        with pytest.raises((ParamsError, ValueError), match=rf"{where} \['\w+\+rerank'\] .*enabled is false"):
            typed({**off, **fine, **changes})
    keep = {"serve_infer": {"retrieval": {"systems": ["base", "tuned+base_rerank"]}}, "rag": {"retrievers": ["hybrid"]},
            "assistant": {"retriever": "hybrid"}}
    p = typed({**off, **keep})

    raw = merge(params, {**off, **keep})
    params_file, train_file = tmp_path / "params.yaml", tmp_path / "train.jsonl"
    params_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    write_jsonl(train_file, rows())
    (tmp_path / "embedder").mkdir()
    out, live, metrics = tmp_path / "reranker", tmp_path / "live", tmp_path / "train_rerank.json"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"an earlier run's model")
    result = CliRunner().invoke(train_rerank.main, [
        "--params", str(params_file), "--train", str(train_file), "--embedder", str(tmp_path / "embedder"),
        "--out", str(out), "--live", str(live), "--metrics", str(metrics),
        "--checkpoints", str(tmp_path / "ckpt")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [f.name for f in out.iterdir()] == ["NOT_TRAINED.md"]  # the earlier model is gone, not served
    assert (live / "NOT_TRAINED.md").is_file()
    assert json.loads(metrics.read_text()) == {"train_rows": 0, "steps": 0}
    retrievers = Retrievers([r["pos"][0] for r in rows()], p, tuned_reranker=out)
    assert "bm25+rerank" not in retrievers.available() and "bm25+base_rerank" in retrievers.available()
