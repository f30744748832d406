"""GSM8K answer checking: gold extraction, the final boxed answer, and math-verify's tricky cases."""

import threading

import pytest

from raglab.generator.maths import GoldError, check, final_part, gold_answer, last_boxed

# (response, gold, expected status): what a careful grader would say
CASES = [
    (r"so \boxed{8000}", "8000", "correct"),
    (r"\boxed{8,000}", "8000", "correct"),                      # thousands separator
    (r"\boxed{1,234,567}", "1234567", "correct"),
    (r"\boxed{\$8000}", "8000", "correct"),                     # currency
    (r"\boxed{$8000}", "8000", "correct"),
    (r"\boxed{8000 dollars}", "8000", "correct"),               # unit word (math-verify alone: wrong)
    (r"\boxed{18 \text{ apples}}", "18", "correct"),
    (r"\boxed{8000.0}", "8000", "correct"),                     # trailing .0
    (r"\boxed{8000.00}", "8000", "correct"),
    (r"\boxed{18.}", "18", "correct"),                          # trailing full stop (math-verify alone: wrong)
    (r"\boxed{3.50}", "3.5", "correct"),
    (r"\boxed{-3}", "-3", "correct"),                           # negative
    (r"\boxed{\frac{1}{2}}", "0.5", "correct"),                 # fractions
    (r"\boxed{1/2}", "0.5", "correct"),
    (r"\boxed{2\frac{1}{2}}", "2.5", "correct"),
    (r"\boxed{50\%}", "50", "correct"),                         # percentages (math-verify on ANTLR 4.9: wrong)
    (r"\boxed{50%}", "50", "correct"),
    (r"\boxed{0.5}", "50", "wrong"),                            # a share is not a percentage
    (r"\boxed{0,1}", "1", "wrong"),                             # a tuple, not a thousands separator
    (r"\boxed{12,5}", "125", "wrong"),                          # nor a malformed one
    (r"\boxed{18}", "17", "wrong"),
    (r"\boxed{17.999999}", "18", "wrong"),
    (r"First \boxed{12}. Wait, recheck: \boxed{18}", "18", "correct"),  # the last box counts
    (r"\boxed{18}\boxed{19}", "19", "correct"),                 # (math-verify alone merges them: wrong)
    (r"\boxed{ 18 }", "18", "correct"),
    (r"\boxed{\text{18}}", "18", "correct"),
    (r"\boxed{x = 18}", "18", "correct"),
    ("The answer is 18", "18", "no_boxed"),                     # never guessed from loose numbers
    ("$18", "18", "no_boxed"),
    (r"\boxed{18", "18", "no_boxed"),                           # unclosed
    (r"\boxed{}", "18", "wrong"),
    ("", "18", "empty"),
    ("  \n", "18", "empty"),
    ("<think>\n9 + 9 = \\boxed{17}?\n</think>\n\nSo \\boxed{18}.", "18", "correct"),  # after </think> only
    ("<think>\nthe answer is \\boxed{18}\n</think>\n\nI am not sure.", "18", "no_boxed"),
    ("<think>\nlong reasoning\n</think>\n\n", "18", "empty"),
]


@pytest.mark.parametrize("response, gold, expected", CASES)
def test_check_tricky_cases(response, gold, expected):
    assert check(gold, response).status == expected


# (response, gold, strict status, lenient status): a student cut off mid-reasoning fails strictly
STRICT_VS_LENIENT = [
    ("<think>\n9 + 9 = \\boxed{18}, let me check again and again", "18", "unclosed", "correct"),
    ("<think>\n9 + 9 = \\boxed{17}", "18", "unclosed", "wrong"),
    ("<think>\nnothing boxed yet", "18", "unclosed", "no_boxed"),
    ("<think>\n9 + 9\n</think>\n\nSo \\boxed{18}.", "18", "correct", "correct"),  # closed: the same verdict
    ("no reasoning tags, \\boxed{18}", "18", "correct", "correct"),  # a model that does not think in tags
]


@pytest.mark.parametrize("response, gold, strict, lenient", STRICT_VS_LENIENT)
def test_strict_fails_unclosed_reasoning_and_lenient_takes_the_last_box(response, gold, strict, lenient):
    assert check(gold, response).status == strict  # strict is the default: what accuracy means
    assert check(gold, response, strict=False).status == lenient


def test_check_reports_the_boxed_text_as_written():
    assert check("8000", r"It is \boxed{8,000 dollars}.").answer == "8,000 dollars"
    assert check("1", "no box").answer is None


def test_check_works_outside_the_main_thread():
    """math-verify's default timeouts use SIGALRM, which only the main thread may set: they are off."""
    results = []
    worker = threading.Thread(target=lambda: results.append(check("18", r"\boxed{18}").status))
    worker.start()
    worker.join()
    assert results == ["correct"]


@pytest.mark.parametrize("solution, gold", [
    ("3 + 4 = <<3+4=7>>7\n#### 7", "7"),
    ("...\n#### 1,080", "1080"),
    ("...\n#### -12", "-12"),
])
def test_gold_answer(solution, gold):
    assert gold_answer(solution) == gold


@pytest.mark.parametrize("solution", ["no final line", "#### twelve"])
def test_gold_answer_rejects_solutions_without_a_number(solution):
    with pytest.raises(GoldError):
        gold_answer(solution)


def test_final_part_and_last_boxed():
    assert final_part("<think>a</think>b</think>c") == "c"
    assert final_part("plain") == "plain"
    assert last_boxed(r"\boxed{\frac{1}{2}} and \fbox{3}") == "3"
    assert last_boxed(r"\boxed {4}") == "4"
    assert last_boxed(r"\boxedx{4}") is None
