"""Supervised fine-tuning data for the generator (CMRC 2018 reading comprehension).

A training record in Alpaca form: ``instruction`` = the prompt template filled
with the passage and the question, ``input`` = "", ``output`` = the first gold
answer, ``system`` = the system prompt; the same record in the OpenAI
``messages`` form; and eval records ``{id, context, question, answers, golds}`` (``answers`` the first gold
answer, the brief's EM; ``golds`` every annotator's, for ``em_any``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from raglab.core.prompts import chat_messages, render
from raglab.core.report import StageReport


@dataclass
class RCExample:
    id: str
    context: str
    question: str
    answer: str  # the first gold answer
    golds: tuple[str, ...] = ()  # every annotator's answer, the first one first (distinct, stripped)


def validate_rc(rows: Sequence[dict], report: StageReport) -> list[RCExample]:
    """Drop rows with an empty question, passage or answer (counted); count answers not in the passage.

    The record's answer is the first gold answer; ``answer_not_in_context`` counts those that are not
    a substring of their passage (kept: the model is still asked for them), and
    ``other_answer_not_in_context`` the rows where another annotator's answer is not (CMRC 2018
    validation: 174 of 3,219 rows; their first answer always is).
    """
    kept = []
    counts = report.extra
    counts.setdefault("answer_not_in_context", 0)
    counts.setdefault("other_answer_not_in_context", 0)
    for row in rows:
        context, question = (row.get("context") or "").strip(), (row.get("question") or "").strip()
        answers = [a for a in row.get("answers") or [] if a and a.strip()]
        if not question:
            report.drop("empty_question")
        elif not context:
            report.drop("empty_context")
        elif not answers:
            report.drop("empty_answer")
        else:
            answer = answers[0].strip()
            counts["answer_not_in_context"] += answer not in context
            counts["other_answer_not_in_context"] += any(a.strip() not in context for a in answers[1:])
            golds = tuple(dict.fromkeys(a.strip() for a in answers))
            kept.append(RCExample(str(row.get("id", len(kept))), context, question, answer, golds))
    return kept


def split_by_passage(examples: Sequence[RCExample], eval_size: float, seed: int
                     ) -> tuple[list[RCExample], list[RCExample]]:
    """Seeded split in which all questions of one passage land on the same side (no passage leaks)."""
    if not 0 < eval_size < 1:
        raise ValueError(f"eval size must be in (0, 1), got {eval_size}")
    passages = sorted({e.context for e in examples})
    random.Random(seed).shuffle(passages)
    n_eval = max(1, round(len(passages) * eval_size))
    held_out = set(passages[:n_eval])
    return [e for e in examples if e.context not in held_out], [e for e in examples if e.context in held_out]


def alpaca_record(ex: RCExample, template: str, system: str) -> dict:
    return {"instruction": render(template, ex.context, ex.question), "input": "", "output": ex.answer,
            "system": system}


def messages_record(ex: RCExample, template: str, system: str) -> dict:
    messages = chat_messages(system, render(template, ex.context, ex.question))
    return {"messages": messages + [{"role": "assistant", "content": ex.answer}]}


def eval_record(ex: RCExample) -> dict:
    return {"id": ex.id, "context": ex.context, "question": ex.question, "answers": ex.answer,
            "golds": list(ex.golds or (ex.answer,))}
