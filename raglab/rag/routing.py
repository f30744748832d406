"""The RAG system's intent router: maths questions go to the model directly, the rest through retrieval.

Two kinds (params ``rag.router.kind``):

- ``embedding``: logistic regression (scikit-learn) on the base embedder's normalised vectors of
  training questions, GSM8K labelled ``math`` and CMRC labelled ``rag``; its weights are saved as
  safetensors next to a JSON description, and reloaded by the assistant.
- ``llm``: a chat model is asked the router prompt (the brief's intent classifier); a reply that
  says "math" routes to ``math``, anything else to ``rag``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raglab.core.formats import read_jsonl, write_json
from raglab.core.prompts import chat_messages, render_question
from raglab.core.sampling import distinct_sample
from raglab.retriever.search import encode_queries

MATH, RAG = "math", "rag"
ROUTER_MAX_TOKENS = 8  # the llm router's reply: one word
ROUTES = (RAG, MATH)
WEIGHTS, CONFIG = "router.safetensors", "router.json"


def training_questions(gsm8k_dir: Path, cmrc_pairs: Path, n: int, seed: int,
                       held_out: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """The embedding router's training questions per route: a seeded sample of at most ``n`` GSM8K questions
    (``download``'s files, those in ``held_out`` left out) and of ``n`` CMRC training questions (``build_sft``'s
    pairs)."""
    gsm8k = [row["question"] for f in sorted(Path(gsm8k_dir).glob("*.jsonl")) for row in read_jsonl(f)]
    cmrc = [row["question"] for row in read_jsonl(cmrc_pairs)]
    return {MATH: distinct_sample([q for q in gsm8k if q not in held_out], n, seed),
            RAG: distinct_sample(cmrc, n, seed)}


@dataclass
class EmbeddingRouter:
    embedder: Any  # a FlagEmbedding encoder (raglab.retriever.search.load_embedder)
    weight: np.ndarray  # (dim,)
    bias: float

    @classmethod
    def fit(cls, embedder, math_questions: Sequence[str], rag_questions: Sequence[str], seed: int) -> EmbeddingRouter:
        from sklearn.linear_model import LogisticRegression

        if not math_questions or not rag_questions:
            raise ValueError(f"the embedding router needs questions of both routes, got {len(math_questions)} "
                             f"maths and {len(rag_questions)} retrieval questions")
        x = encode_queries(embedder, list(math_questions) + list(rag_questions))
        y = np.array([1] * len(math_questions) + [0] * len(rag_questions))
        model = LogisticRegression(max_iter=1000, random_state=seed).fit(x, y)
        return cls(embedder, model.coef_[0].astype(np.float32), float(model.intercept_[0]))

    def route(self, questions: Sequence[str]) -> list[str]:
        if not questions:
            return []
        logits = encode_queries(self.embedder, list(questions)) @ self.weight + self.bias
        return [MATH if z > 0 else RAG for z in logits]

    def save(self, out_dir: str | os.PathLike, description: dict) -> None:
        from safetensors.numpy import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight, "bias": np.array([self.bias], dtype=np.float32)}, str(out / WEIGHTS))
        write_json(out / CONFIG, {"kind": "embedding", "routes": {"1": MATH, "0": RAG}, **description})

    @classmethod
    def load(cls, router_dir: str | os.PathLike, embedder) -> EmbeddingRouter:
        from safetensors.numpy import load_file

        tensors = load_file(str(Path(router_dir) / WEIGHTS))
        return cls(embedder, tensors["weight"], float(tensors["bias"][0]))


def router_messages(prompt: str, system: str | None, question: str) -> list[dict]:
    return chat_messages(system, render_question(prompt, question))


def route_from_reply(reply: str) -> str:
    """The LLM router's verdict: ``math`` when the reply names maths (Math, maths, 数学), else ``rag``."""
    return MATH if re.search(r"math|数学", reply, flags=re.IGNORECASE) else RAG


def routing_accuracy(labels: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy over all held-out questions and per true route."""
    out = {"routing_accuracy": float(np.mean([a == b for a, b in zip(labels, predicted)])) if labels else 0.0}
    for route in ROUTES:
        pairs = [(a, b) for a, b in zip(labels, predicted) if a == route]
        if pairs:
            out[f"routing_accuracy_{route}"] = float(np.mean([a == b for a, b in pairs]))
    return out
