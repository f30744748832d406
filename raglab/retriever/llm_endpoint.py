"""The LLM rerankers through an OpenAI-compatible server (params ``rerank.llm.endpoint``), one request per pair,
``batch_size`` requests in flight.

- ``yes_no`` asks for a one-token reply with the top 20 log-probabilities of its first token (the OpenAI API's
  ``logprobs`` / ``top_logprobs``, which vLLM serves too). A listed token stands for an answer when the answer
  starts with it (spaces aside); an answer none stands for gets the lowest listed log-probability, an upper bound
  on its own.
- ``query_likelihood`` needs the log-probabilities of the prompt's own tokens, which only vLLM returns: the
  question is sent as the assistant's turn to continue (``continue_final_message``) with ``prompt_logprobs: 0``
  and ``return_token_ids``, and the question's last tokens are read; how many tokens the question is comes from
  vLLM's ``/tokenize`` (once per question).

Passages are sent whole: the server's context length bounds them (no local tokenizer to cut them with).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from raglab.params.rerank import LogprobEndpoint
from raglab.serving.types import Endpoint

TOP_LOGPROBS = 20  # the most the OpenAI API lists


def answer_probability(top: dict[str, float], answers: tuple[str, str]) -> float:
    """P(yes) / (P(yes) + P(no)) from a reply's top log-probabilities (token -> log-probability)."""
    floor = min(top.values())

    def logprob(word: str) -> float:
        found = [lp for token, lp in top.items() if token.strip() and word.startswith(token.strip())]
        return max(found) if found else floor

    yes, no = answers
    return 1.0 / (1.0 + math.exp(logprob(no) - logprob(yes)))


class EndpointLLM:
    """The server of ``endpoint`` scoring chats (``raglab.retriever.llm_rerank.Scorer``)."""

    def __init__(self, endpoint: LogprobEndpoint, batch_size: int, timeout_s: float, max_retries: int):
        from openai import OpenAI

        self.endpoint, self.batch_size, self.timeout_s = endpoint, batch_size, timeout_s
        self.api_key = Endpoint(endpoint.base_url, endpoint.model, endpoint.api_key_env).api_key()
        self.client = OpenAI(base_url=endpoint.base_url, api_key=self.api_key, timeout=timeout_s,
                             max_retries=max_retries)

    def cut(self, passage: str) -> str:
        return passage

    def _each(self, one, chats: list[list[dict]]) -> list[float]:
        with ThreadPoolExecutor(self.batch_size) as pool:
            return list(pool.map(one, chats))

    def _missing(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.endpoint.base_url} ({self.endpoint.model}) returned no {what}: the LLM reranker "
                            "reads them (rerank.llm.endpoint)")

    def yes_no(self, chats: list[list[dict]], answers: tuple[str, str]) -> list[float]:
        def one(chat: list[dict]) -> float:
            response = self.client.chat.completions.create(
                model=self.endpoint.model, messages=chat, max_tokens=1, temperature=0.0, logprobs=True,
                top_logprobs=TOP_LOGPROBS)
            logprobs = response.choices[0].logprobs
            if logprobs is None or not logprobs.content or not logprobs.content[0].top_logprobs:
                raise self._missing("top_logprobs for the reply's first token")
            return answer_probability({t.token: t.logprob for t in logprobs.content[0].top_logprobs}, answers)

        return self._each(one, chats)

    def query_likelihood(self, chats: list[list[dict]], question: str) -> list[float]:
        n = self.count_tokens(question)

        def one(chat: list[dict]) -> float:
            response = self.client.chat.completions.create(
                model=self.endpoint.model, messages=chat + [{"role": "assistant", "content": question}],
                max_tokens=1, temperature=0.0,
                extra_body={"prompt_logprobs": 0, "return_token_ids": True, "continue_final_message": True,
                            "add_generation_prompt": False})
            data = response.model_dump()
            ids, logprobs = data.get("prompt_token_ids"), data.get("prompt_logprobs")
            if not ids or not logprobs or len(ids) != len(logprobs) or len(ids) <= n:
                raise self._missing("prompt_logprobs with prompt_token_ids (vLLM returns them)")
            return sum(_logprob(logprobs[i], ids[i]) for i in range(len(ids) - n, len(ids))) / n

        return self._each(one, chats)

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is in the served model's tokenizer (vLLM's ``/tokenize``, at the server's root)."""
        import httpx

        root = self.endpoint.base_url.rstrip("/").removesuffix("/v1")
        reply = httpx.post(f"{root}/tokenize", timeout=self.timeout_s,
                           json={"model": self.endpoint.model, "prompt": text, "add_special_tokens": False},
                           headers={"Authorization": f"Bearer {self.api_key}"})
        try:
            count = int(reply.json()["count"]) if reply.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            count = None
        if count is None:
            raise RuntimeError(f"{root}/tokenize answered {reply.status_code} without a count: query likelihood "
                               "through an endpoint counts the question's tokens with vLLM's /tokenize")
        if not count:
            raise ValueError("query likelihood scores the question's tokens, and the question is empty")
        return count


def _logprob(entry: dict[Any, Any] | None, token_id: int) -> float:
    """The log-probability of ``token_id`` in one position of vLLM's ``prompt_logprobs`` (keyed by token id)."""
    found = (entry or {}).get(str(token_id)) or (entry or {}).get(token_id)
    if found is None:
        raise RuntimeError(f"prompt_logprobs lists no log-probability for prompt token {token_id}")
    return float(found["logprob"])
