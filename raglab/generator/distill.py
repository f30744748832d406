"""Chain-of-thought distillation (GSM8K): ask a teacher, keep the solutions whose answer verifies.

Each round asks the teacher about every question still without a verified solution (round r is
sample r of that conversation, so the response cache tells rounds apart); a reply is **kept** when
the last ``\\boxed{}`` after its reasoning equals the gold number (``raglab.generator.maths``), otherwise the
question goes to the next round, up to ``max_rounds``. Every attempt is classified: ``correct``,
``wrong`` (a boxed answer that is not the gold), ``no_boxed``, ``empty``, ``request_error`` (the
endpoint failed after its retries). Kept and still-failed questions are both saved.

A kept reply becomes an SFT record in the brief's form: ``instruction`` = the question in the
distillation prompt, ``output`` = ``<think>\\n{reasoning}\\n</think>\\n\\n{final text}``. The
reasoning is the teacher's ``reasoning_content`` or inline ``<think>`` block; a teacher that does
not separate its reasoning (a plain instruct model) has its whole reply as the reasoning, and
``The final answer is $\\boxed{N}$.`` as the final text. The ``answer_only`` variant keeps the
final text under an empty ``<think>\\n\\n</think>`` (the brief's ablation without the reasoning;
the same think prefix then works at inference for both variants).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from raglab.core.prompts import chat_messages, render_question
from raglab.core.report import StageReport
from raglab.generator.maths import GoldError, check, gold_answer
from raglab.params.pipeline import Prices
from raglab.serving.client import Reply, Request

VARIANTS = ("cot", "answer_only")
ATTEMPT_STATUSES = ("correct", "wrong", "no_boxed", "empty", "unclosed", "request_error")


@dataclass
class Question:
    id: str
    question: str
    gold: str


def gsm8k_questions(rows: Sequence[dict], split: str, report: StageReport) -> list[Question]:
    """Questions with a numeric gold answer; rows without one (or without a question) are dropped and counted."""
    out = []
    for i, row in enumerate(rows, start=1):
        question = (row.get("question") or "").strip()
        if not question:
            report.drop(f"{split}_empty_question")
            continue
        try:
            gold = gold_answer(row.get("answer") or "")
        except GoldError:
            report.drop(f"{split}_no_numeric_gold")
            continue
        out.append(Question(f"{split}-{i}", question, gold))
    return out


def carve(questions: list[Question], eval_size: float, seed: int) -> tuple[list[Question], list[Question]]:
    """Seeded (train, eval) split of one split's questions, with no question text on both sides."""
    if not 0 < eval_size < 1:
        raise ValueError(f"distill_cot.eval_size must be in (0, 1), got {eval_size}")
    texts = sorted({q.question for q in questions})
    random.Random(seed).shuffle(texts)
    held_out = set(texts[:max(1, round(len(texts) * eval_size))])
    return [q for q in questions if q.question not in held_out], [q for q in questions if q.question in held_out]


def attempt_status(gold: str, reply: Reply) -> tuple[str, str | None]:
    if not reply.ok:
        return "request_error", None
    verdict = check(gold, reply.content)
    return verdict.status, verdict.answer


@dataclass
class Outcome:
    kept: dict[str, tuple[Reply, int, str]] = field(default_factory=dict)  # id -> (reply, round, boxed answer)
    attempts: dict[str, list[dict]] = field(default_factory=dict)          # id -> every attempt
    rounds_used: int = 0
    statuses: Counter = field(default_factory=Counter)                     # over every attempt
    replies: list[Reply] = field(default_factory=list)


def distill(questions: list[Question], messages: Callable[[Question], list[dict]],
            ask: Callable[[list[Request], int], list[Reply]], max_rounds: int, seed: int) -> Outcome:
    """Rounds of asking until every question has a verified solution or ``max_rounds`` are used.

    Round r sends sample r of each conversation with the sampling seed ``seed + r``."""
    if max_rounds < 1:
        raise ValueError(f"distill_cot.max_rounds must be >= 1, got {max_rounds}")
    outcome = Outcome(attempts={q.id: [] for q in questions})
    pending = list(questions)
    for round_no in range(max_rounds):
        if not pending:
            break
        outcome.rounds_used = round_no + 1
        replies = ask([Request(messages(q), sample=round_no, seed=seed + round_no) for q in pending], round_no)
        if len(replies) != len(pending):
            raise RuntimeError(f"round {round_no}: {len(replies)} replies to {len(pending)} requests")
        still = []
        for q, reply in zip(pending, replies):
            status, answer = attempt_status(q.gold, reply)
            outcome.statuses[status] += 1
            outcome.replies.append(reply)
            outcome.attempts[q.id].append({"round": round_no, "status": status, "answer": answer,
                                           "error": reply.error})
            if status == "correct":
                outcome.kept[q.id] = (reply, round_no, answer)
            else:
                still.append(q)
        pending = still
    return outcome


def solution_text(reply: Reply, answer: str, variant: str) -> str:
    """The assistant turn of a training record, in the brief's ``<think>…</think>`` form."""
    if variant not in VARIANTS:
        raise ValueError(f"distill_cot.variant must be one of {VARIANTS}, got {variant!r}")
    if reply.reasoning is not None:
        reasoning, final = reply.reasoning.strip(), reply.content.strip()
    else:
        reasoning, final = reply.content.strip(), f"The final answer is $\\boxed{{{answer}}}$."
    return f"<think>\n{reasoning if variant == 'cot' else ''}\n</think>\n\n{final}"


def training_record(q: Question, reply: Reply, answer: str, prompt: str, system: str, variant: str) -> dict:
    return {"instruction": render_question(prompt, q.question), "input": "",
            "output": solution_text(reply, answer, variant), "system": system}


def question_messages(prompt: str, system: str) -> Callable[[Question], list[dict]]:
    return lambda q: chat_messages(system, render_question(prompt, q.question))


def usage(replies: Sequence[Reply], prices: Prices) -> dict:
    """Tokens of all replies, of those this run paid for (not from the cache), and their estimated cost."""
    def tally(rs):
        prompt, completion = sum(r.prompt_tokens for r in rs), sum(r.completion_tokens for r in rs)
        cost = (prompt * prices.prompt + completion * prices.completion) / 1e6
        return {"requests": len(rs), "prompt_tokens": prompt, "completion_tokens": completion,
                "estimated_cost_usd": round(cost, 4)}

    return {"all": tally(replies), "this_run": tally([r for r in replies if not r.cached])}
