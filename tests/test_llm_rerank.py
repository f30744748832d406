"""The LLM rerankers: query likelihood and yes/no scores read from log-probabilities a scripted model is given (the
orders computed by hand), the same scores from the tiny LLM batched and one pair at a time, an OpenAI-compatible
endpoint's logprobs, the threshold and the first-stage fusion on LLM scores, the assistant's answer when no passage
passes, and the params that cannot work."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from raglab.retriever.llm_rerank import LLMReranker, LocalLLM, pair_chat

WORDS = ["[PAD]", "[UNK]", "<|im_start|>", "<|im_end|>", "system", "user", "assistant", "alpha", "beta", "gamma",
         "which", "one", "Yes", "No", "write", "answer"]
ID = {w: i for i, w in enumerate(WORDS)}
KB = ["alpha", "beta beta beta", "gamma gamma"]  # of different lengths: the batch [alpha, gamma gamma] is padded
QUESTION = "which one"


def word_tokenizer():
    """One token per word of WORDS, ChatML's chat template: token ids a test can count by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from raglab.models.tiny import CHATML_TEMPLATE

    tok = Tokenizer(models.WordLevel(ID, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                   chat_template=CHATML_TEMPLATE)


class ScriptedLM(torch.nn.Module):
    """Test double of a causal LM: the next token's log-probabilities are the test's. A sequence that holds a
    passage's key word predicts from that passage's table {(token, next token): log-probability}; next tokens the
    table does not name share the rest of the probability evenly. It checks that a batch is left-padded with
    positions counted from the attention mask, as a real model needs."""

    def __init__(self, tables: dict[str, dict[tuple[str, str], float]]):
        super().__init__()
        self.tables = {ID[key]: {(ID[a], ID[b]): lp for (a, b), lp in t.items()} for key, t in tables.items()}
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device for the caller to read
        self.batch_sizes: list[int] = []

    def row(self, table: dict[tuple[int, int], float], current: int) -> torch.Tensor:
        named = {b: lp for (a, b), lp in table.items() if a == current}
        rest = (1 - sum(math.exp(lp) for lp in named.values())) / (len(WORDS) - len(named))
        out = torch.full((len(WORDS),), math.log(rest))
        for b, lp in named.items():
            out[b] = lp
        return out

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep=0):
        self.batch_sizes.append(len(input_ids))
        logits = torch.empty(*input_ids.shape, len(WORDS))
        for b, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            n = int(mask.sum())
            assert mask[-n:].all() and not mask[:-n].any() and not mask[ids == ID["[PAD]"]].any(), "left padding"
            assert position_ids[b, -n:].tolist() == list(range(n)), "positions from the mask"
            table = next((t for key, t in self.tables.items() if key in ids[-n:].tolist()), {})
            for i, token in enumerate(ids.tolist()):
                logits[b, i] = self.row(table, token)
        return SimpleNamespace(logits=logits[:, -(logits_to_keep or input_ids.shape[1]):])


SCRIPTED_LLM = {"system": None, "batch_size": 2,
                "query_likelihood": {"prompt": {"en": "{passage} write", "zh": "{passage} 写"}},
                "yes_no": {"prompt": {"en": "{passage} {question} answer", "zh": "{passage} {question} 答"}}}


def scripted_params(typed, **rerank):
    """Params ``rerank`` with the word prompts above, rrf_k 0 (fusion by hand), and ``rerank`` laid over them."""
    from raglab.params.loader import merge

    return typed(merge({"rerank": {"rrf_k": 0, "llm": SCRIPTED_LLM}}, {"rerank": rerank})).rerank


def reranker(typed, kind: str, tables) -> LLMReranker:
    model = ScriptedLM(tables)
    return LLMReranker(kind, scripted_params(typed).llm, LocalLLM(model, word_tokenizer(), 2, 512))


def order(ranking) -> str:
    return " ".join(KB[j].split()[0] for j, _ in ranking)


FIRST_STAGE = [(2, 3.0), (0, 2.0), (1, 1.0)]  # gamma, alpha, beta
# query likelihood: the question "which one" follows the reply's start ("assistant"); by hand, the mean of
# log P(which | assistant) and log P(one | which): alpha -1.5, beta -0.5, gamma (nothing named) log(1/16) each
QL_TABLES = {"alpha": {("assistant", "which"): -1.0, ("which", "one"): -2.0},
             "beta": {("assistant", "which"): -0.5, ("which", "one"): -0.5}}
# yes/no: P(Yes) / (P(Yes) + P(No)) after "assistant": alpha 0.6 / 0.8, beta 0.1 / 0.4, gamma (even) 1/2
YES_NO_TABLES = {"alpha": {("assistant", "Yes"): math.log(0.6), ("assistant", "No"): math.log(0.2)},
                 "beta": {("assistant", "Yes"): math.log(0.1), ("assistant", "No"): math.log(0.3)}}


def test_query_likelihood_is_the_mean_log_probability_of_the_question_tokens(typed):
    ql = reranker(typed, "query_likelihood", QL_TABLES)
    assert ql.scores(QUESTION, KB) == pytest.approx([-1.5, -0.5, math.log(1 / 16)], abs=1e-5)
    assert ql.scorer.model.batch_sizes == [2, 1]  # 3 pairs, batch_size 2
    ranked = ql.rerank(QUESTION, FIRST_STAGE, KB, 3, scripted_params(typed))
    assert order(ranked) == "beta alpha gamma"
    assert ql.seconds and ql.seconds[0] > 0


def test_yes_no_is_the_normalised_probability_of_yes(typed):
    yes_no = reranker(typed, "yes_no", YES_NO_TABLES)
    assert yes_no.scores(QUESTION, KB) == pytest.approx([0.75, 0.25, 0.5], abs=1e-5)
    assert order(yes_no.rerank(QUESTION, FIRST_STAGE, KB, 3, scripted_params(typed))) == "alpha gamma beta"


def test_each_kind_has_its_threshold_and_its_fusion_with_the_first_stage(typed):
    """Query likelihood orders beta, alpha, gamma; the first stage gamma, alpha, beta. Reciprocal-rank fusion (rrf_k
    0): weight 0.5 gives beta 1 + 0.5/3, gamma 1/3 + 0.5, alpha 1/2 + 0.5/2; weight 2 gives gamma 1/3 + 2,
    beta 1 + 2/3, alpha 1/2 + 1. The threshold reads the LLM's own score, on its kind's scale."""
    ql, yes_no = reranker(typed, "query_likelihood", QL_TABLES), reranker(typed, "yes_no", YES_NO_TABLES)

    def ranked(r, **kind):
        return order(r.rerank(QUESTION, FIRST_STAGE, KB, 3, scripted_params(typed, llm={r.kind: kind})))

    assert ranked(ql, first_stage_weight=0.5) == "beta gamma alpha"
    assert ranked(ql, first_stage_weight=2.0) == "gamma beta alpha"
    assert ranked(ql, threshold=-1.0) == "beta"
    assert ranked(ql, threshold=-1.0, first_stage_weight=2.0) == "beta"
    assert ranked(yes_no, threshold=0.4) == "alpha gamma"
    assert ranked(yes_no, threshold=0.8) == ""
    # the cross-encoder's threshold is its own: it leaves the LLM's scores alone
    assert order(ql.rerank(QUESTION, FIRST_STAGE, KB, 3, scripted_params(typed, threshold=0.99))) == \
        "beta alpha gamma"


def test_the_prompt_is_in_the_question_language(typed):
    llm = typed().rerank.llm
    en, zh = (pair_chat(llm, kind, q, "PASSAGE")[-1]["content"]
              for kind, q in (("query_likelihood", "What was revenue?"), ("yes_no", "营业收入是多少？")))
    assert en == llm.query_likelihood.prompt.en.replace("{passage}", "PASSAGE") and "What was" not in en
    assert zh == llm.yes_no.prompt.zh.replace("{passage}", "PASSAGE").replace("{question}", "营业收入是多少？")
    assert pair_chat(llm, "yes_no", "q", "braces {question} stay")[-1]["content"].count("{question}") == 1


def reference_scores(scorer: LocalLLM, chats, question: str | None, answers=None) -> list[float]:
    """Each pair alone through the model, no padding, the whole sequence's logits: what the batches must give."""
    out = []
    for chat in chats:
        prompt = scorer.prompt_ids(chat)
        target = scorer.ids(question) if question else []
        with torch.no_grad():
            logits = scorer.model(input_ids=torch.tensor([prompt + target])).logits[0].float()
        logprobs = torch.log_softmax(logits, -1)
        if question:
            out.append(float(sum(logprobs[len(prompt) - 1 + t, tok] for t, tok in enumerate(target)) / len(target)))
        else:
            yes, no = (scorer.ids(w)[0] for w in answers)
            out.append(float(torch.sigmoid(logprobs[-1, yes] - logprobs[-1, no])))
    return out


PASSAGES = ["Revenue rose to $12.1 million in 2023.", "The offices are in Oslo.", "Debt fell by a third.",
            "Net income was $3 million, the highest in five years of trading."]


def test_the_tiny_llm_scores_in_batches_what_it_scores_one_pair_at_a_time(tiny_llm, typed):
    llm = typed().rerank.llm
    scorer = LocalLLM.load(tiny_llm, None, llm, "fp32")
    question = "How much did revenue rise?"
    chats = [pair_chat(llm, "query_likelihood", question, p) for p in PASSAGES]
    for batch_size in (1, 3):
        scorer.batch_size = batch_size
        assert scorer.query_likelihood(chats, question) == pytest.approx(reference_scores(scorer, chats, question),
                                                                         abs=1e-4)
    yes_no = [pair_chat(llm, "yes_no", question, p) for p in PASSAGES]
    assert scorer.yes_no(yes_no, ("Yes", "No")) == pytest.approx(
        reference_scores(scorer, yes_no, None, ("Yes", "No")), abs=1e-4)
    assert all(s < 0 for s in scorer.query_likelihood(chats, question))
    short = LocalLLM(scorer.model, scorer.tokenizer, 2, passage_max_tokens=3)
    assert len(short.ids(short.cut(PASSAGES[3]))) <= 3 < len(scorer.ids(PASSAGES[3]))


def test_precision_is_the_weights_dtype_and_the_adapter_is_merged(tiny_llm, typed, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from raglab.core import machine

    llm = typed().rerank.llm
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for flags, expected in (([], torch.float32), (["avx512_bf16"], torch.bfloat16)):
        monkeypatch.setattr(machine, "bf16_flags", lambda cpuinfo=None, flags=flags: flags)
        assert next(LocalLLM.load(tiny_llm, None, llm, "auto").model.parameters()).dtype == expected
    torch.manual_seed(0)  # a LoRA whose B is not zero: it changes the model
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llm), LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    lora.save_pretrained(tmp_path / "adapter")
    question = "Where are the offices?"
    chats = [pair_chat(llm, "query_likelihood", question, p) for p in PASSAGES]
    base = LocalLLM.load(tiny_llm, None, llm, "fp32").query_likelihood(chats, question)
    tuned = LocalLLM.load(tiny_llm, tmp_path / "adapter", llm, "fp32")
    assert not any("lora" in name for name, _ in tuned.model.named_modules())  # merged into the weights
    assert max(abs(a - b) for a, b in zip(tuned.query_likelihood(chats, question), base)) > 1e-2


def test_retrievers_rerank_any_first_stage_with_the_llm_and_filter_by_its_score(tiny_llm, typed):
    from raglab.retriever.systems import Retrievers

    questions = ["How much did revenue rise?", "Where are the offices?"]
    p = typed({"rerank": {"llm": {"batch_size": 3}}})
    retrievers = Retrievers(PASSAGES, p, llm=tiny_llm)
    assert {"bm25+query_likelihood", "hybrid+yes_no"} <= set(retrievers.available())
    ranked = retrievers.search("bm25+query_likelihood", questions, 2)
    firsts = retrievers.search("bm25", questions, p.rerank.candidates)  # BM25 finds only passages sharing a word
    assert [len(r) for r in ranked] == [min(2, len(c)) for c in firsts]
    assert len(retrievers.rerank_seconds("bm25+query_likelihood", 2)) == 2
    ql = retrievers.reranker("query_likelihood")
    for question, first, got in zip(questions, firsts, ranked):
        scores = ql.scores(question, [PASSAGES[j] for j, _ in first])
        assert got == sorted(((j, s) for (j, _), s in zip(first, scores)), key=lambda x: -x[1])[:2]
    scores = sorted(ql.scores(questions[0], PASSAGES))
    middle = (scores[1] + scores[2]) / 2  # two above, two below
    everything = [(j, 0.0) for j in range(len(PASSAGES))]
    kept = ql.rerank(questions[0], everything, PASSAGES, 4, typed({"rerank": {"llm": {"query_likelihood": {
        "threshold": middle}}}}).rerank)
    assert len(kept) == 2 and all(s > middle for _, s in kept)
    assert retrievers.reranker("yes_no").scorer is ql.scorer  # one LLM loaded for both kinds
    sft = Retrievers(PASSAGES, typed({"rerank": {"llm": {"model": "sft"}}}), llm=tiny_llm)  # no adapter given
    assert "bm25+query_likelihood" not in sft.available()


def chat_completion(model: str, **fields) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "x"},
                         **fields.pop("choice", {})}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}, **fields}


def vllm_script(requests_seen: list[dict], logprobs: bool = True):
    """A vLLM-like server: /tokenize counts the question's two tokens; query likelihood reads prompt logprobs of
    tokens 10 and 11 (the last two), by passage (the tables above); yes/no lists top log-probabilities."""
    from fake_openai import Action, user_text

    def script(request: dict) -> Action:
        requests_seen.append(request)
        if "prompt" in request:  # POST /tokenize
            return Action(body={"count": 2, "max_model_len": 512, "tokens": [10, 11]})
        passage = user_text(request).split()[0]
        if "prompt_logprobs" in request:
            lps = [QL_TABLES.get(passage, {}).get(pair, math.log(1 / 16)) for pair in
                   (("assistant", "which"), ("which", "one"))]
            extra = {"prompt_token_ids": [2, 6, 10, 11],
                     "prompt_logprobs": [None, {"6": {"logprob": -3.0}}, {"10": {"logprob": lps[0]}},
                                         {"11": {"logprob": lps[1]}}]} if logprobs else {}
            return Action(body=chat_completion(request["model"], **extra))
        table = YES_NO_TABLES.get(passage, {("assistant", "Yes"): -1.0, ("assistant", "No"): -1.0})
        top = [{"token": " No", "logprob": table[("assistant", "No")], "bytes": None},
               {"token": "Yes", "logprob": table[("assistant", "Yes")], "bytes": None},
               {"token": "Maybe", "logprob": -4.0, "bytes": None}]
        content = [{"token": "Yes", "logprob": -0.5, "bytes": None, "top_logprobs": top}]
        return Action(body=chat_completion(request["model"], choice={"logprobs": {"content": content}}))

    return script


def test_an_endpoint_scores_from_its_logprobs(typed):
    from fake_openai import FakeOpenAI

    from raglab.retriever.llm_endpoint import EndpointLLM, answer_probability

    seen: list[dict] = []
    with FakeOpenAI(vllm_script(seen)) as server:
        endpoint = {"base_url": server.base_url, "model": "served", "api_key_env": None, "prompt_logprobs": True}
        params = scripted_params(typed, llm={"model": "endpoint", "endpoint": endpoint})
        scorer = EndpointLLM(params.llm.endpoint, 2, timeout_s=10, max_retries=0)
        ql, yes_no = LLMReranker("query_likelihood", params.llm, scorer), LLMReranker("yes_no", params.llm, scorer)
        assert ql.scores(QUESTION, KB) == pytest.approx([-1.5, -0.5, math.log(1 / 16)])
        assert yes_no.scores(QUESTION, KB) == pytest.approx([0.75, 0.25, 0.5])
        assert order(ql.rerank(QUESTION, FIRST_STAGE, KB, 3, params)) == "beta alpha gamma"
    asked = [r for r in seen if "prompt_logprobs" in r]
    assert len(asked) == 6 and sum("prompt" in r for r in seen) == 2  # two queries: each question counted once
    assert asked[0]["continue_final_message"] and asked[0]["messages"][-1] == {"role": "assistant",
                                                                               "content": QUESTION}
    # an answer the top log-probabilities do not list gets the lowest listed: an upper bound on its own
    assert answer_probability({"Yes": math.log(0.5), "Sure": math.log(0.1)}, ("Yes", "No")) == pytest.approx(5 / 6)


def test_an_endpoint_without_prompt_logprobs_is_a_clear_error(typed):
    from fake_openai import FakeOpenAI

    from raglab.retriever.llm_endpoint import EndpointLLM

    with FakeOpenAI(vllm_script([], logprobs=False)) as server:
        endpoint = {"base_url": server.base_url, "model": "served", "api_key_env": None, "prompt_logprobs": True}
        params = scripted_params(typed, llm={"model": "endpoint", "endpoint": endpoint})
        ql = LLMReranker("query_likelihood", params.llm, EndpointLLM(params.llm.endpoint, 2, 10, 0))
        with pytest.raises(RuntimeError, match="returned no prompt_logprobs"):
            ql.scores(QUESTION, KB)


ENDPOINT = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": None, "prompt_logprobs": False}


@pytest.mark.parametrize("changes, error", [
    ({"rag": {"retrievers": ["bm25+query_likelihood"]}, "rerank": {"llm": {"model": "endpoint", "endpoint": ENDPOINT}}},
     r"rag.retrievers uses \+query_likelihood, .* rerank.llm.endpoint.prompt_logprobs is false"),
    ({"assistant": {"retriever": "hybrid+query_likelihood"},
      "rerank": {"llm": {"model": "endpoint", "endpoint": ENDPOINT}}}, r"assistant.retriever uses \+query_likelihood"),
    ({"serve_infer": {"retrieval": {"systems": ["tuned+yes_no"]}}},
     r"serve_infer.retrieval.systems \['yes_no'\]: rerank.llm.model base is the local LLM"),
    ({"rerank": {"llm": {"model": "endpoint"}}}, r"model endpoint asks rerank.llm.endpoint"),
    ({"rerank": {"llm": {"query_likelihood": {"threshold": 0.5}}}},
     r"rerank.llm.query_likelihood.threshold: Input should be less than 0"),
    ({"rerank": {"llm": {"yes_no": {"threshold": 1.5}}}}, r"rerank.llm.yes_no.threshold: Input should be less than 1"),
    ({"rerank": {"llm": {"yes_no": {"answers": {"en": ["Yes", "Yes"]}}}}}, r"answers.en must be two different words"),
    ({"rerank": {"llm": {"query_likelihood": {"prompt": {"en": "Write a question."}}}}},
     r"prompt.en must use exactly \{passage\}"),
    ({"rag": {"retrievers": ["bm25+colbert"]}}, r"\+query_likelihood or \+yes_no"),
])
def test_params_a_reranker_cannot_serve_are_refused_at_load(typed, changes, error):
    from raglab.params.schema import ParamsError

    with pytest.raises(ParamsError, match=error):
        typed(changes)


def test_params_every_llm_reranker_can_serve_load(typed):
    served = {"model": "endpoint", "endpoint": {**ENDPOINT, "prompt_logprobs": True}}
    typed({"rag": {"retrievers": ["bm25+query_likelihood", "hybrid+yes_no"]}})  # the local LLM, in serve_infer_rag
    typed({"serve_infer": {"retrieval": {"systems": ["tuned+query_likelihood"]}}, "rerank": {"llm": served}})
    typed({"rag": {"retrievers": ["bm25+yes_no"]},  # yes/no reads the reply's logprobs, which any endpoint gives
           "rerank": {"llm": {"model": "endpoint", "endpoint": ENDPOINT}}})


def test_the_assistant_says_no_passage_answers_when_none_passes_the_threshold(tiny_llm, typed):
    """A mean log-probability above -1e-6 per question token (the tiny random model gives about -8) keeps no
    passage: the assistant says so in the question's language and never asks the generator."""
    from fake_openai import Action, FakeOpenAI

    from raglab.assistant.system import Assistant
    from raglab.serving.client import Endpoint

    with FakeOpenAI(lambda request: Action(content="Other")) as server:
        def assistant(threshold):
            p = typed({"rag": {"top_k": 2, "router": {"kind": "llm"}},
                       "rerank": {"llm": {"query_likelihood": {"threshold": threshold}}}})
            return Assistant(p, PASSAGES, None, None, Endpoint(server.base_url, "gen-1"), "bm25+query_likelihood",
                             llm=tiny_llm)

        strict = assistant(-1e-6)
        turn = strict.prepare([{"role": "user", "content": "Where are the offices?"}])
        assert turn.messages is None and turn.reply.passages == []
        assert turn.reply.answer == strict.params.rag.no_passage.en and "rerank_s" in turn.reply.timings
        assert list(strict.stream(turn)) == [strict.params.rag.no_passage.en]
        zh = strict.generate(strict.prepare([{"role": "user", "content": "办公室在哪里？"}]))
        assert zh.answer == strict.params.rag.no_passage.zh and "generation_s" not in zh.timings
        assert [r["messages"][-1]["content"] for r in server.requests if r["model"] == "gen-1"
                and "maths word problem" not in r["messages"][-1]["content"]] == []  # only the router was asked
        turn = assistant(None).prepare([{"role": "user", "content": "Where are the offices?"}])
        assert turn.messages and turn.reply.passages  # without the threshold: passages, and the generator's chat
