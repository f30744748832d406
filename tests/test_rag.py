"""The RAG system's parts: Chinese BM25, reciprocal-rank fusion, the retrievers over one knowledge base,
the router, the vocabulary extension of an English embedder, the passage-grouped split, and ragas'
judge through the response cache (against the scripted OpenAI-compatible test server)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from fake_openai import Action, FakeOpenAI, ragas_input, schema_title, user_text

from raglab.core.report import StageReport
from raglab.rag.kb import read_chunks, read_kb, unique_passages, write_kb
from raglab.rag.routing import MATH, RAG, EmbeddingRouter, route_from_reply, routing_accuracy
from raglab.rag.system import rag_messages
from raglab.retriever.data import seeded_group_split
from raglab.retriever.search import BM25Index, reciprocal_rank_fusion, words
from raglab.retriever.systems import Retrievers
from raglab.serving.cache import ResponseCache

KB = ["林晓是一位建筑师，出生于苏州，代表作是《远山》。",
      "王磊在成都开了一家面馆，每天卖出三百碗面。",
      "陈静是青岛的医生，她在2019年获得了医学奖。",
      "赵敏写了小说《海潮》，讲述厦门渔民的故事。"]
TOO_LONG = ("This model's maximum context length is 2048 tokens. However, your prompt contains at least 2049 "
            "input tokens, which exceeds this limit even without any output tokens.")  # vLLM's 400
QUESTIONS = ["林晓的代表作是什么？", "王磊的面馆在哪个城市？", "陈静哪一年获得医学奖？", "《海潮》讲的是哪里的故事？"]


def test_jieba_words_drop_punctuation_and_lowercase():
    assert words("GSM8K：王磊有3个苹果！") == ["gsm8k", "王磊", "有", "3", "个", "苹果"]


def test_bm25_over_jieba_words_finds_each_passage():
    rankings = BM25Index(KB).search(QUESTIONS, k=2)
    assert [r[0][0] for r in rankings] == [0, 1, 2, 3]
    assert all(a[1] >= b[1] for r in rankings for a, b in itertools.pairwise(r))
    assert BM25Index(KB).search(["completely unrelated english"], k=2) == [[]]  # no shared word: no ranking


def test_bm25_segments_only_the_start_of_an_overlong_query(monkeypatch):
    """jieba's time grows with the square of a run of one character: a huge message must not hold the search."""
    from raglab.retriever import search

    index, segmented = BM25Index(KB), []
    monkeypatch.setattr(search, "words", lambda text: segmented.append(len(text)) or words(text))
    (ranking,) = index.search([QUESTIONS[1] + "赵" * 200_000], k=2)
    assert segmented == [search.MAX_QUERY_CHARS] and ranking[0][0] == 1  # the question itself still ranks


def test_reciprocal_rank_fusion_adds_reciprocal_ranks():
    a = [[(0, 9.0), (1, 5.0), (2, 1.0)]]
    b = [[(2, 0.9), (0, 0.8)]]
    fused = reciprocal_rank_fusion([a, b], k=3, rrf_k=0)
    assert fused == [[(0, 1 + 1 / 2), (2, 1 / 3 + 1), (1, 1 / 2)]]
    assert reciprocal_rank_fusion([a, b], k=1, rrf_k=60)[0][0][0] == 0
    weighted = reciprocal_rank_fusion([a, b], k=3, rrf_k=0, weights=[1.0, 0.25])  # b counts a quarter
    assert weighted == [[(0, 1 + 0.25 / 2), (2, 1 / 3 + 0.25), (1, 1 / 2)]]
    with pytest.raises(ValueError, match="2 fusion weights for 3 rankings"):
        reciprocal_rank_fusion([a, b, a], k=1, weights=[1.0, 1.0])


def test_retrievers_grid_over_one_knowledge_base(minilm_dir, typed):
    params = typed({"embedder": {"model": minilm_dir, "revision": None, "pooling": "mean", "query_instruction": None,
                                 "batch_size": 8},
                    "rag": {"hybrid": {"of": ["bm25", "base"], "weights": None, "rrf_k": 60}}})
    retrievers = Retrievers(KB, params)
    # no tuned embedder or reranker given: each first stage alone or reordered by the base cross-encoder
    assert retrievers.available() == ["bm25", "base", "hybrid", "bm25+base_rerank", "base+base_rerank",
                                      "hybrid+base_rerank"]
    with pytest.raises(ValueError, match="unknown retriever 'tuned'"):
        retrievers.search("tuned", QUESTIONS, 2)
    bm25, dense, hybrid = (retrievers.search(name, QUESTIONS, 3) for name in ("bm25", "base", "hybrid"))
    assert all(len(r) == 3 for r in dense + hybrid) and [r[0][0] for r in bm25] == [0, 1, 2, 3]
    assert [r[0][0] for r in hybrid] == [0, 1, 2, 3]  # BM25 is right on every question; fusion keeps it
    with_tuned = Retrievers(KB, params, tuned_embedder=minilm_dir)  # the same model as "tuned": the same ranking
    assert with_tuned.search("tuned", QUESTIONS, 3) == dense
    messages = rag_messages(params.prompt, QUESTIONS[0], [KB[i] for i, _ in hybrid[0][:2]])
    assert messages[-1]["content"] == params.prompt.template.format(context=KB[0] + "\n" + KB[hybrid[0][1][0]],
                                                                          question=QUESTIONS[0])


def test_knowledge_base_file_keeps_passages_with_newlines(tmp_path):
    passages = unique_passages([{"context": "第一段\n第二行"}, {"context": "另一段"}, {"context": "第一段\n第二行"}])
    assert passages == ["第一段\n第二行", "另一段"]
    write_kb(tmp_path / "kb.jsonl", passages)
    assert read_kb(tmp_path / "kb.jsonl") == passages
    (tmp_path / "bad.jsonl").write_text('{"id": 0}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*row 1.*text"):
        read_kb(tmp_path / "bad.jsonl")


def test_the_users_documents_as_a_knowledge_base(tmp_path):
    """assistant.knowledge_base: documents serves build_chunks' chunks; no chunk is an error naming the file."""
    chunks = [{"id": "a1", "text": "Zephyr Motors employed 3,100 people.", "source": "z.md"},
              {"id": "b2", "text": "赵敏出生于1998年。", "source": "人物介绍.txt"}]
    (tmp_path / "chunks.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chunks),
                                           encoding="utf-8")
    assert read_chunks(tmp_path / "chunks.jsonl") == [c["text"] for c in chunks]
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.jsonl.*no chunks"):
        read_chunks(tmp_path / "empty.jsonl")


MATHS = [f"Tom has {n} apples and buys {n + 3} more. How many apples does he have now?" for n in range(2, 14)]
READING = [f"{q}" for q in QUESTIONS] + ["苏州在哪个省？", "谁写了《春夜》？", "厦门有多少渔民？", "成都的面馆多吗？",
                                          "医学奖每年颁发吗？", "建筑师做什么？", "青岛的医生是谁？", "小说讲了什么？"]


def test_embedding_router_learns_routes_and_reloads(minilm_dir, tmp_path):
    from raglab.retriever.search import EmbedderConfig, load_embedder

    embedder = load_embedder(EmbedderConfig(model=minilm_dir, pooling="mean", batch_size=16))
    router = EmbeddingRouter.fit(embedder, MATHS[:8], READING[:8], seed=0)
    held_out_q, labels = MATHS[8:] + READING[8:], [MATH] * 4 + [RAG] * 4
    predicted = router.route(held_out_q)
    assert predicted == labels
    router.save(tmp_path / "router", {"embedder": minilm_dir})
    assert EmbeddingRouter.load(tmp_path / "router", embedder).route(held_out_q) == predicted
    assert json.loads((tmp_path / "router" / "router.json").read_text())["kind"] == "embedding"
    with pytest.raises(ValueError, match="questions of both routes"):
        EmbeddingRouter.fit(embedder, [], READING, seed=0)


def test_llm_router_reply_and_routing_accuracy():
    assert [route_from_reply(r) for r in ("Math", "maths.", "数学", "Other", "")] == [MATH, MATH, MATH, RAG, RAG]
    scores = routing_accuracy([MATH, MATH, RAG, RAG], [MATH, RAG, RAG, RAG])
    assert scores == {"routing_accuracy": 0.75, "routing_accuracy_rag": 1.0, "routing_accuracy_math": 0.5}


def test_group_split_keeps_each_passage_on_one_side():
    keys = [f"p{i // 3}" for i in range(60)]  # 20 passages, 3 questions each
    train, test = seeded_group_split(keys, 0.2, seed=1)
    assert sorted(train + test) == list(range(60))
    assert not {keys[i] for i in train} & {keys[i] for i in test}
    assert len({keys[i] for i in test}) == 4
    assert seeded_group_split(keys, 0.2, seed=1) == (train, test)


def test_extended_vocabulary_gives_unknown_characters_their_own_tokens(minilm_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from raglab.retriever.vocabulary import extend_vocabulary

    base = AutoTokenizer.from_pretrained(minilm_dir)
    text = "赵敏写了小说《海潮》，讲述厦门渔民的故事。"
    assert base.unk_token in base.tokenize(text)
    added = extend_vocabulary(minilm_dir, [text, text], min_count=2, seed=3, out_dir=tmp_path / "a")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert added > 0 and len(tokenizer) == len(base) + added
    assert tokenizer.unk_token not in tokenizer.tokenize(text)
    assert tokenizer.tokenize("the net income") == base.tokenize("the net income")  # known words unchanged
    model = AutoModel.from_pretrained(tmp_path / "a")
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    extend_vocabulary(minilm_dir, [text, text], min_count=2, seed=3, out_dir=tmp_path / "b")
    again = AutoModel.from_pretrained(tmp_path / "b")
    assert (again.get_input_embeddings().weight == model.get_input_embeddings().weight).all()  # seeded
    assert extend_vocabulary(minilm_dir, [text], min_count=2, seed=3, out_dir=tmp_path / "c") == 0  # seen once


# --- the judge: ragas' answer relevancy and faithfulness through the response cache ---------------------------

def judge_script(verdicts: list[int], broken_answer: str | None = None):
    """Answer relevancy: the generated question is the asked one (cosine 1); faithfulness: one statement per
    verdict. The answer ``broken_answer`` gets noise instead of JSON."""

    def script(request: dict) -> Action:
        title, given = schema_title(request), ragas_input(request)
        if broken_answer is not None and broken_answer in (given.get("response"), given.get("answer")):
            return Action(content="not json at all")
        if title == "AnswerRelevanceOutput":
            return Action(content=json.dumps({"question": QUESTIONS[0], "noncommittal": 0}))
        if title == "StatementGeneratorOutput":
            return Action(content=json.dumps({"statements": [f"statement {i}" for i in range(len(verdicts))]}))
        if title == "NLIStatementOutput":
            return Action(content=json.dumps({"statements": [
                {"statement": s, "reason": "scripted", "verdict": v} for s, v in zip(given["statements"], verdicts)]}))
        return Action(status=400)

    return script


@pytest.mark.parametrize("mode", ["json", "json_schema"])
def test_judge_scores_through_the_cache_and_counts_unparseable_verdicts(minilm_dir, tmp_path, monkeypatch, mode, typed):
    from raglab.evaluation.judge import judge_scores

    monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    rows = [{"question": QUESTIONS[0], "prediction": "《远山》", "passages": KB[:2]},
            {"question": QUESTIONS[0], "prediction": "BROKEN", "passages": KB[:2]},
            {"question": QUESTIONS[1], "prediction": "", "passages": KB[:2]}]
    with FakeOpenAI(judge_script([1, 0, 1, 1], broken_answer="BROKEN")) as server:
        params = typed({"score": {"generation": {"cosine_embedder": {
                            "library": "flagembedding", "model": minilm_dir, "revision": None, "pooling": "mean", "query_max_len": 64,
                            "passage_max_len": 64, "batch_size": 8}},
                        "rag": {"judge": {"kind": "endpoint", "base_url": server.base_url, "model": "judge-1",
                                          "api_key_env": "JUDGE_KEY", "mode": mode, "max_tokens": 256,
                                          "strictness": 2}}},
                        "serving": {"timeout_s": 30, "max_retries": 0, "concurrency": 4}})
        judge, serving, embedder = params.score.rag.judge, params.serving, params.score.generation.cosine_embedder
        report = StageReport("score_rag")
        scores = judge_scores(judge, None, serving, embedder, rows, tmp_path / "log", report)
        asked = len(server.requests)
        assert scores[0] == {"answer_relevancy": pytest.approx(1.0, abs=1e-4), "faithfulness": 0.75}
        assert scores[1] == {"answer_relevancy": None, "faithfulness": None}  # noise: no verdict, not a 0
        assert scores[2] == {"answer_relevancy": None, "faithfulness": None}  # nothing to judge
        assert report.extra["judge_missing_verdicts"] == {"InstructorRetryException": 2, "empty_answer": 1}
        assert {r["auth"] for r in server.requests} == {"Bearer sk-test"}  # the key from the environment
        assert asked == 2 + 2 + 1 + 1  # row 1: 2 questions + 2 faithfulness steps; row 2: each metric's first fails
        again = judge_scores(judge, None, serving, embedder, rows, tmp_path / "log", StageReport("score_rag"))
        assert again == scores
        assert len(server.requests) == asked  # re-scoring asks nothing: every reply (noise too) replays from the cache
    assert len(ResponseCache(tmp_path / "cache" / "responses.sqlite")) == asked  # the same request twice: 2 entries


def test_no_judge_means_no_verdicts(tmp_path, typed):
    from raglab.evaluation.judge import judge_scores

    params = typed({"score": {"rag": {"judge": {"kind": "none"}}}})
    assert judge_scores(params.score.rag.judge, None, params.serving, params.score.generation.cosine_embedder,
                        [{"question": "q"}] * 2, tmp_path, StageReport("x")) == [{}, {}]


def test_embedder_pairs_from_cmrc_training_passages_only(mirror, tmp_path, params):
    """build_sft writes the questions of its training passages (pairs.jsonl) and each eval split's knowledge
    base; build_embed_negatives with that source and split_by passage never puts an eval passage, or a passage
    of its own test split, into the training rows."""
    import yaml
    from click.testing import CliRunner

    from raglab.core.formats import read_jsonl
    from stages import build_embed_negatives, build_sft, download

    params = json.loads(json.dumps(params))
    params["download"]["mirror"] = str(mirror)
    params["build_sft"].update(train_split="validation", eval_split="validation", eval_size=0.3, max_eval=5)
    params["build_embed_negatives"].update(source=str(tmp_path / "sft" / "pairs.jsonl"), split_by="passage",
                                           negatives="random", num_negatives=2, test_size=0.2)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    runner = CliRunner()
    for command, args in [(download.main, ["--out", str(tmp_path / "raw")]),
                          (build_sft.main, ["--source", str(tmp_path / "raw" / "cmrc2018"), "--out", str(tmp_path / "sft")]),
                          (build_embed_negatives.main, ["--out", str(tmp_path / "embed")])]:
        result = runner.invoke(command, ["--params", str(params_file), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    pairs = read_jsonl(tmp_path / "sft" / "pairs.jsonl")
    kb = read_kb(tmp_path / "sft" / "eval" / "test_kb.jsonl")
    eval_rows = read_jsonl(tmp_path / "sft" / "eval" / "test.jsonl")
    assert len(eval_rows) == 5 and {r["context"] for r in eval_rows} <= set(kb)  # the whole split's passages
    assert not {p["context"] for p in pairs} & set(kb)
    train = read_jsonl(tmp_path / "embed" / "train.jsonl")
    test = read_jsonl(tmp_path / "embed" / "test" / "eval.jsonl")
    assert len(train) + len(test) == len(pairs)
    assert not {r["pos"][0] for r in train} & {r["corpus"][0] for r in test}


def test_rag_parts_end_to_end_with_hosted_generator_router_and_judge(mirror, tmp_path, params, minilm_dir, monkeypatch,
                                                                     tiny_llm):
    """serve_infer_rag and score_rag with every model behind the scripted OpenAI-compatible server: an external
    generator, the llm router and the judge (the local systems and the embedding router run in the DVC test)."""
    import yaml
    from click.testing import CliRunner

    from raglab.core.formats import read_jsonl, write_jsonl
    from stages import build_sft, download, score_rag, serve_infer_rag

    monkeypatch.setenv("RAGLAB_CACHE", str(tmp_path / "cache"))
    embedder = {"model": minilm_dir, "revision": None, "pooling": "mean", "query_instruction": None,
                "query_max_len": 64, "passage_max_len": 128, "batch_size": 16, "trust_remote_code": False}

    refused = {}  # the first generator prompt (BM25's system is asked first): refused as too long

    def script(request: dict) -> Action:
        text = user_text(request)
        if "maths word problem" in text:  # the router prompt: maths questions are English here
            return Action(content="Math" if re.search(r"[a-z]{4}", text.rsplit("\n", 1)[-1]) else "Other")
        if request["model"] == "judge-1":
            return judge_script([1, 1])(request)
        if request["model"] == "gen-1" and refused.setdefault("prompt", text) == text:  # atomic under the GIL
            return Action(status=400, message=TOO_LONG)  # one prompt does not fit the served context
        return Action(content=re.search(r"### 已知文段：(.)", text).group(1))  # the first character of the context

    with FakeOpenAI(script) as server:
        p = json.loads(json.dumps(params))
        p["download"]["mirror"] = str(mirror)
        p["embedder"] = {**p["embedder"], **embedder}
        p["build_sft"].update(train_split="validation", eval_split="validation", eval_size=0.3, max_eval=6)
        p["rag"].update(
            retrievers=["bm25", "tuned", "hybrid", "bm25+rerank", "bm25+query_likelihood"], generators=[], max_answers=4,
            external=[{"name": "hosted", "base_url": server.base_url, "model": "gen-1"}],
            router={**p["rag"]["router"], "kind": "llm",
                    "endpoint": {"name": "router", "base_url": server.base_url, "model": "router-1"}})
        p["reranker"].update(model=minilm_dir, revision=None, max_len=128)  # its head untrained: order only
        # the tiny LLM's question tokens average about -8: a threshold of -1e-6 keeps no passage
        p["rerank"]["llm"]["query_likelihood"]["threshold"] = -1e-6
        p["score"]["rag"]["judge"].update(kind="endpoint", base_url=server.base_url, model="judge-1", strictness=1)
        p["score"]["generation"]["cosine_embedder"] = {"library": "flagembedding", **{k: embedder[k] for k in (
            "model", "revision", "pooling", "query_max_len", "passage_max_len", "batch_size")}}
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
        gsm8k = [{"question": f"Tom has {n} apples and eats one. How many are left?", "answer": f"#### {n - 1}"}
                 for n in range(2, 8)]
        write_jsonl(tmp_path / "raw" / "gsm8k" / "train.jsonl", gsm8k)
        write_jsonl(tmp_path / "distill" / "eval.jsonl", [{"id": "0", "question": gsm8k[0]["question"], "gold": "1"}])
        (tmp_path / "models").mkdir()
        runner = CliRunner()
        for command, args in [
            (download.main, ["--out", str(tmp_path / "raw")]),
            (build_sft.main, ["--source", str(tmp_path / "raw" / "cmrc2018"), "--out", str(tmp_path / "sft")]),
            (serve_infer_rag.main, ["--eval", str(tmp_path / "sft"), "--adapter", str(tmp_path / "models"),
                                "--base", tiny_llm, "--embedder", minilm_dir,
                                "--reranker", minilm_dir, "--math", str(tmp_path / "distill"), "--gsm8k", str(tmp_path / "raw" / "gsm8k"),
                                "--out", str(tmp_path / "infer")]),
            (score_rag.main, ["--infer", str(tmp_path / "infer"), "--metrics", str(tmp_path / "rag.json"),
                          "--plot", str(tmp_path / "rag.csv"), "--per-query", str(tmp_path / "score")])]:
            result = runner.invoke(command, ["--params", str(params_file), *args], catch_exceptions=False)
            assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rag.json").read_text())
    assert set(metrics["test"]) == {"bm25", "tuned", "hybrid", "bm25+rerank", "bm25+query_likelihood", "bm25+hosted",
                                    "tuned+hosted", "hybrid+hosted", "bm25+rerank+hosted",
                                    "bm25+query_likelihood+hosted"}
    assert metrics["test"]["bm25+rerank"]["rerank_p95_s"] >= metrics["test"]["bm25+rerank"]["rerank_p50_s"] > 0
    assert "rerank_p50_s" not in metrics["test"]["bm25"]
    # no passage above the LLM reranker's threshold: the system's own answer, the generator never asked
    unanswerable = read_jsonl(tmp_path / "infer" / "test" / "bm25+query_likelihood+hosted.jsonl")
    assert {a["prediction"] for a in unanswerable} == {p["rag"]["no_passage"]["zh"]} and len(unanswerable) == 4
    asked = [user_text(r) for r in server.requests if r["model"] == "gen-1"]
    assert asked and not [text for text in asked if "### 已知文段：\n" in text]  # no prompt with an empty context
    report = json.loads((tmp_path / "infer" / "report.json").read_text())
    assert report["no_passage"] == {"test/bm25+query_likelihood+hosted": 4}
    answers = read_jsonl(tmp_path / "infer" / "test" / "bm25+hosted.jsonl")
    assert [a["prediction"] for a in answers if "error" in a] == [""]  # kept in the grid, scored as wrong
    dropped = json.loads((tmp_path / "infer" / "report.json").read_text())["dropped"]
    assert dropped["test/bm25+hosted: prompt longer than the served context (answered empty)"] == 1
    kb = read_kb(tmp_path / "sft" / "eval" / "test_kb.jsonl")
    assert len(answers) == 4 and all(len(a["passages"]) == min(3, len(kb)) for a in answers), len(kb)  # top_k
    assert len(read_jsonl(tmp_path / "infer" / "test" / "retrieval" / "bm25.jsonl")) == 6  # hit@k over all
    hosted = metrics["test"]["bm25+hosted"]
    assert hosted["origin"] == 0.75  # the first character of the passages it was given; the refused one wrong
    assert hosted["faithfulness"] == 1.0 and hosted["faithfulness_judged"] == 0.75  # the empty reply unjudged
    assert metrics["routing"]["llm"]["routing_accuracy"] == 1.0
    assert "judge" not in metrics  # a real judge: no note
    assert (tmp_path / "rag.csv").read_text().count("\n") > 6


def test_only_a_prompt_too_long_for_the_context_is_kept_as_an_empty_reply(tmp_path, typed):
    """``ask(keep_too_long=True)`` returns the server's context-length refusal as an empty reply to count; any
    other refusal (a 400 for another reason) still fails the batch, with or without it."""
    from raglab.serving.systems import ask
    from raglab.serving.types import Endpoint, Sampling

    serving = typed({"serving": {"timeout_s": 30, "max_retries": 0, "concurrency": 2}}).serving
    chats = [[{"role": "user", "content": q}] for q in ("short", "long", "bad")]

    def script(request: dict) -> Action:
        text = user_text(request)
        return {"long": Action(status=400, message=TOO_LONG), "bad": Action(status=400)}.get(text, Action(content="ok"))

    with FakeOpenAI(script) as server:
        endpoint, cache = Endpoint(server.base_url, "gen-1"), ResponseCache(tmp_path / "cache.sqlite")
        replies = ask(endpoint, chats[:2], Sampling(8), serving, cache, "gen-1", "test", keep_too_long=True)
        assert [(r.content, r.too_long) for r in replies] == [("ok", False), ("", True)]
        with pytest.raises(RuntimeError, match="1 of 2 requests"):
            ask(endpoint, chats[:2], Sampling(8), serving, cache, "gen-1", "test")  # not asked to keep it
        with pytest.raises(RuntimeError, match="scripted 400"):
            ask(endpoint, chats, Sampling(8), serving, cache, "gen-1", "test", keep_too_long=True)
