"""LLM rerankers: a causal LM reads each (question, passage) pair and scores it in one forward pass, no generation.

- ``query_likelihood`` (UPR, Sachan et al. 2022): the passage and an instruction to write a question about it are
  the user's turn, the question is the assistant's reply; the score is the mean log-probability of the question's
  tokens (below 0; near 0 when the question reads as if written from the passage).
- ``yes_no``: the passage and the question, and whether the one answers the other; the score is
  P(yes) / (P(yes) + P(no)) of the two answers' first tokens at the reply's first position, in (0, 1).

The prompts are params (``rerank.llm.<kind>``), English or Chinese by the question's language, so that every
candidate of a question is scored under the same prompt. ``LocalLLM`` scores with transformers (for ``sft`` the
LoRA adapter merged into the base weights): ``batch_size`` pairs per forward pass, left-padded with positions
counted from the attention mask, only the logits that are read computed (``logits_to_keep``: the question's
positions, or the last one), weights in bf16 where ``rerank.precision`` resolves to it and the log-softmax in
fp32. An OpenAI-compatible server scores through ``raglab.retriever.llm_endpoint``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, Protocol

from raglab.core.prompts import chat_messages
from raglab.data.chunks import language
from raglab.params.rerank import LlmRerank
from raglab.retriever.rerank import Reranker

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def fill(template: str, **values: str) -> str:
    """``template`` with its ``{passage}`` / ``{question}`` fields filled in one pass (other braces stay)."""
    return re.sub(r"\{(passage|question)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def pair_chat(llm: LlmRerank, kind: str, question: str, passage: str) -> list[dict]:
    """The conversation that scores ``passage`` for ``question``: the system prompt and the kind's prompt in the
    question's language; for query likelihood the question is the reply, not part of the prompt."""
    template = getattr(getattr(llm, kind).prompt, language(question))
    return chat_messages(llm.system, fill(template, passage=passage, question=question))


def answer_words(llm: LlmRerank, question: str) -> tuple[str, str]:
    """The yes and no answers in the question's language."""
    yes, no = getattr(llm.yes_no.answers, language(question))
    return yes, no


class Scorer(Protocol):
    """What scores the chats of one question's candidates: the local model or an endpoint."""

    def cut(self, passage: str) -> str: ...
    def query_likelihood(self, chats: list[list[dict]], question: str) -> list[float]: ...
    def yes_no(self, chats: list[list[dict]], answers: tuple[str, str]) -> list[float]: ...


class LocalLLM:
    """A causal LM and its tokenizer (with a chat template) scoring chats, ``batch_size`` at a time."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int, passage_max_tokens: int,
                 precision: str = "fp32"):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the LLM reranker builds its prompts with the tokenizer's chat template, and this "
                             "tokenizer has none")
        self.model, self.tokenizer, self.precision = model, tokenizer, precision
        self.batch_size, self.passage_max_tokens = batch_size, passage_max_tokens
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out anyway

    @classmethod
    def load(cls, folder: str | os.PathLike, adapter: str | os.PathLike | None, llm: LlmRerank, precision: str,
             trust_remote_code: bool = False) -> LocalLLM:
        """The LLM of ``folder`` (download@llm's), with the LoRA ``adapter`` merged when given, in ``precision``
        (auto: bf16 on a GPU or a CPU with AMX / AVX512-BF16, else fp32)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from raglab.core.machine import resolve_precision

        gpu = torch.cuda.is_available()
        resolved = resolve_precision(precision, "LLM reranker", gpu=gpu)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, DTYPES[resolved]),
                                                     trust_remote_code=trust_remote_code)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        return cls(model.to("cuda" if gpu else "cpu").eval(), tokenizer, llm.batch_size, llm.passage_max_tokens,
                   resolved)

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def cut(self, passage: str) -> str:
        """``passage`` cut to ``passage_max_tokens`` of the model's tokens."""
        ids = self.ids(passage)
        return passage if len(ids) <= self.passage_max_tokens else self.tokenizer.decode(ids[:self.passage_max_tokens])

    def prompt_ids(self, chat: list[dict]) -> list[int]:
        """The chat in the model's template, up to the start of the assistant's reply."""
        return self.ids(self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))

    def query_likelihood(self, chats: list[list[dict]], question: str) -> list[float]:
        """Per chat: the mean log-probability of the question's tokens as the reply."""
        import torch

        target = self.ids(question)
        if not target:
            raise ValueError("query likelihood scores the question's tokens, and the question is empty")
        wanted = torch.tensor(target)

        def read(logprobs):  # positions -m-1 .. -2 predict the m question tokens
            picked = logprobs[:, :-1].gather(-1, wanted.to(logprobs.device).expand(len(logprobs), -1)[..., None])
            return picked[..., 0].mean(-1)

        return self.score([self.prompt_ids(c) + target for c in chats], len(target) + 1, read)

    def yes_no(self, chats: list[list[dict]], answers: tuple[str, str]) -> list[float]:
        """Per chat: P(yes) / (P(yes) + P(no)) of the answers' first tokens at the reply's first position."""
        yes, no = (self.ids(word)[:1] for word in answers)
        if not yes or not no or yes == no:
            raise ValueError(f"rerank.llm.yes_no.answers {list(answers)} must start with two different tokens of "
                             "this model's tokenizer")
        return self.score([self.prompt_ids(c) for c in chats], 1,
                          lambda logprobs: (logprobs[:, -1, yes[0]] - logprobs[:, -1, no[0]]).sigmoid())

    def score(self, sequences: list[list[int]], keep: int, read: Callable) -> list[float]:
        """``read`` of the log-probabilities at the last ``keep`` positions of each sequence, ``batch_size``
        sequences per forward pass (those of similar length together: less padding)."""
        import torch

        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = [0.0] * len(sequences)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = max(len(sequences[i]) for i in rows)
            ids = torch.tensor([[self.pad_id] * (width - len(sequences[i])) + sequences[i] for i in rows])
            mask = torch.tensor([[0] * (width - len(sequences[i])) + [1] * len(sequences[i]) for i in rows])
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device),
                                    logits_to_keep=keep).logits
                scores = read(torch.log_softmax(logits[:, -keep:].float(), dim=-1))
            for i, s in zip(rows, scores.tolist()):
                out[i] = float(s)
        return out


class LLMReranker(Reranker):
    """Reranker ``kind`` (query_likelihood or yes_no) of params ``rerank.llm``, scoring through ``scorer``."""

    def __init__(self, kind: str, llm: LlmRerank, scorer: Scorer):
        self.kind, self.llm, self.scorer = kind, llm, scorer
        self.seconds: list[float] = []

    def scores(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        chats = [pair_chat(self.llm, self.kind, query, self.scorer.cut(p)) for p in passages]
        if self.kind == "query_likelihood":
            return self.scorer.query_likelihood(chats, query)
        return self.scorer.yes_no(chats, answer_words(self.llm, query))
