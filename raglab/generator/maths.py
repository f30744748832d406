"""Maths answers (GSM8K): the gold number, the model's final answer, and whether they agree.

- **Gold**: the text after ``#### `` in a GSM8K solution (integers, some with thousands separators,
  a few negative).
- **Final part** of a response: the text after the last ``</think>`` (the whole text when there is
  none); the **answer** is the content of its last ``\\boxed{…}`` (braces matched; an unclosed box
  counts as none). A response without a boxed answer is never guessed from loose numbers: it fails
  as ``no_boxed``.
- **Strict** (the default, what accuracy means): a response that opens ``<think>`` and never closes it
  (cut off mid-reasoning) fails as ``unclosed``, whatever it boxed along the way. **Lenient**
  (``strict=False``, reported beside it): such a response is scored on the last box anywhere in it.
- **Verification** goes through Hugging Face's ``math-verify`` (``parse``, then ``verify(gold,
  answer)``: not symmetric, gold first), with both of its SIGALRM timeouts off so that it works in
  worker threads. Three GSM8K cases it gets wrong on its own are handled before it: several boxes
  in one response (it merges boxes close together into a set: only the last box is parsed here),
  percentages (``50\\%``: the parser shipped for the ANTLR 4.9 runtime this environment pins
  fails on them; GSM8K golds are never percent-scaled, so ``%`` is dropped) and a number followed
  by a unit word (``8000 dollars`` parses as a product of letters; the number is taken). Tested
  case by case in tests/test_maths.py.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

GOLD_MARK = "#### "
THINK_START, THINK_END = "<think>", "</think>"
STATUSES = ("correct", "wrong", "no_boxed", "empty", "unclosed")

_NUMBER_THEN_WORDS = re.compile(
    r"(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*(?:\\(?:text|mbox|mathrm)\{)?\s*[A-Za-z][A-Za-z ]*\}?")


class GoldError(ValueError):
    pass


def gold_answer(solution: str) -> str:
    """The number after ``#### `` of a GSM8K solution (thousands separators removed)."""
    if GOLD_MARK not in solution:
        raise GoldError("no '#### ' line with the final answer")
    gold = solution.rsplit(GOLD_MARK, 1)[1].strip().replace(",", "")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", gold):
        raise GoldError(f"the final answer {gold!r} is not a number")
    return gold


def final_part(response: str) -> str:
    """What follows the reasoning: the text after the last ``</think>``, or all of it."""
    return response.rsplit(THINK_END, 1)[1] if THINK_END in response else response


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (or ``\\fbox{…}``), braces matched; None if there is none."""
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0 or text[i:j].strip() not in ("\\boxed", "\\fbox"):
        return None
    depth = 0
    for k in range(j, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[j + 1:k].strip()
    return None  # unclosed


@dataclass
class Verdict:
    status: str  # one of STATUSES
    answer: str | None  # the boxed text, as the model wrote it

    @property
    def correct(self) -> bool:
        return self.status == "correct"


def check(gold: str, response: str, strict: bool = True) -> Verdict:
    """Does the boxed answer in the final part of ``response`` equal ``gold`` (a number)? ``strict``: a response
    whose reasoning was opened (``<think>``) and never closed fails as ``unclosed``."""
    import sympy
    from math_verify import LatexExtractionConfig, parse, verify

    # the timeouts are off on purpose (SIGALRM only works in the main thread); their warning says so on every call
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if strict and THINK_START in response and THINK_END not in response:
        return Verdict("unclosed", last_boxed(response))
    final = final_part(response)
    if not final.strip():
        return Verdict("empty", None)
    box = last_boxed(final)
    if box is None:
        return Verdict("no_boxed", None)
    text = re.sub(r"\\?[%$]|\.$", "", box).strip()
    parsed = parse("\\boxed{" + text + "}", extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
                   parsing_timeout=None)
    m = _NUMBER_THEN_WORDS.fullmatch(text)
    if m and not any(isinstance(p, sympy.Number) for p in parsed):
        parsed = [sympy.Rational(m.group(1).replace(",", ""))]
    ok = bool(parsed) and verify(sympy.Rational(gold), parsed, timeout_seconds=None)
    return Verdict("correct" if ok else "wrong", box)
