"""Grading R1 outputs: a table of real-looking outputs with the verdict a careful human grader gives, graded by
math-verify in-process and through the process pool; the per-answer timeout kills a hung worker."""
from __future__ import annotations

import time
from fractions import Fraction

import pytest

from quantkit.eval.grading import (Grade, Grader, answer_part, boxed, final_boxes, grade_answer, last_number, letter,
                                   number)


def r1(thought: str, answer: str) -> str:
    """What R1 generates after the template's forced `<think>\\n`: the thought, the closing tag, the answer."""
    return f"{thought}\n</think>\n\n{answer}"


T = "Okay, let me work through this step by step. First I set up the equation, then I check the result."

# (kind, gold, generated text, verdict, extracted)
TABLE = [
    # fractions and decimals, \dfrac
    ("math", "0.5", r1(T, "The probability is $\\boxed{\\frac{1}{2}}$."), "correct", "\\frac{1}{2}"),
    ("math", "\\frac{1}{2}", r1(T, "So the answer is \\(\\boxed{0.5}\\)."), "correct", "0.5"),
    ("math", "\\frac{14}{3}", r1(T, "**Final Answer**\n\\[\n\\boxed{\\dfrac{14}{3}}\n\\]"), "correct", "\\dfrac{14}{3}"),
    ("math", "\\frac{14}{3}", r1(T, "The length is approximately $\\boxed{4.67}$."), "wrong", "4.67"),
    ("math", "\\frac{\\sqrt{3}}{3}", r1(T, "Thus $\\tan 30^\\circ = \\boxed{\\frac{1}{\\sqrt{3}}}$."), "correct",
     "\\frac{1}{\\sqrt{3}}"),
    ("math", "11\\sqrt2", r1(T, "The diagonal is $\\boxed{11\\sqrt{2}}$."), "correct", "11\\sqrt{2}"),
    ("math", "\\pi", r1(T, "The area is about $\\boxed{3.14}$."), "wrong", "3.14"),
    # units and degrees
    ("math", "90^\\circ", r1(T, "The angle measures $\\boxed{90}$ degrees."), "correct", "90"),
    ("math", "30", r1(T, "Therefore $\\angle ABC = \\boxed{30^\\circ}$."), "correct", "30^\\circ"),
    ("math", "10", r1(T, "The side is $\\boxed{10 \\text{ cm}}$ long."), "correct", "10 \\text{ cm}"),
    ("math", "5\\text{ inches}", r1(T, "The height is $\\boxed{5}$ inches."), "correct", "5"),
    # intervals
    ("math", "[-2,7]", r1(T, "The range is $\\boxed{[-2, 7]}$."), "correct", "[-2, 7]"),
    ("math", "(-\\infty, 3)", r1(T, "So $x$ lies in $\\boxed{(-\\infty, 3]}$."), "wrong", "(-\\infty, 3]"),
    ("math", "(-\\infty,-2)\\cup(2,\\infty)",
     r1(T, "The domain is $\\boxed{(-\\infty, -2) \\cup (2, \\infty)}$."), "correct", "(-\\infty, -2) \\cup (2, \\infty)"),
    # sets and lists of solutions, tuples
    ("math", "1, 2, 3", r1(T, "The solutions are $\\boxed{3, 1, 2}$."), "correct", "3, 1, 2"),
    ("math", "-2, 1", r1(T, "The roots are $x = \\boxed{1}$ and $x = \\boxed{-2}$."), "correct", "1; -2"),
    ("math", "(3, \\frac{\\pi}{2})", r1(T, "In polar form: $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$."),
     "correct", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("math", "(1,2)", r1(T, "The point is $\\boxed{(2, 1)}$."), "wrong", "(2, 1)"),
    ("math", "\\begin{pmatrix} -1 \\\\ 2 \\end{pmatrix}",
     r1(T, "$\\boxed{\\begin{pmatrix}-1\\\\2\\end{pmatrix}}$"), "correct", "\\begin{pmatrix}-1\\\\2\\end{pmatrix}"),
    # expressions
    ("math", "x^2+7x+10", r1(T, "Expanding gives $\\boxed{(x+2)(x+5)}$."), "correct", "(x+2)(x+5)"),
    ("math", "6+9i", r1(T, "So $z = \\boxed{9i + 6}$."), "correct", "9i + 6"),
    ("math", "2", r1(T, "Hence $k = \\boxed{3}$."), "wrong", "3"),
    # text answers
    ("math", "\\text{Evelyn}", r1(T, "Evelyn has the greatest average speed: $\\boxed{\\text{Evelyn}}$."),
     "correct", "\\text{Evelyn}"),
    ("math", "\\text{Evelyn}", r1(T, "$\\boxed{\\text{Amy}}$"), "wrong", "\\text{Amy}"),
    ("math", "\\text{(C)}", r1(T, "The correct option is $\\boxed{C}$."), "correct", "C"),
    # several boxes: the last one is the answer, with the boxes written as one list with it
    ("math", "42", r1(T, "We get $\\boxed{42}$.\n\n**Final Answer**\n\\[\\boxed{42}\\]"), "correct", "42"),
    ("math", "5", r1(T, "At first $\\boxed{3}$, but checking again it is $\\boxed{5}$."), "correct", "5"),
    ("math", "12", r1(T, "First guess \\boxed{10}, but checking: \\boxed{12}"), "correct", "12"),
    ("math", "10", r1(T, "First guess \\boxed{10}, but checking: \\boxed{12}"), "wrong", "12"),
    ("math", "3, 5", r1(T, "The roots are $\\boxed{3}, \\boxed{5}$."), "correct", "3; 5"),
    ("math", "-2, 1", r1(T, "Not $\\boxed{2}$: the roots are $x = \\boxed{1}$ or $x = \\boxed{-2}$."), "correct",
     "1; -2"),
    ("math", "4", r1(T, "So $\\boxed{4}$, and the box \\boxed{} stays empty."), "correct", "4"),
    ("number", "12", r1(T, "That gives $\\boxed{10}$ apples. Wait, I forgot two: $\\boxed{12}$."), "correct", "12"),
    ("number", "7", r1(T, "It is $\\boxed{7}$ or $\\boxed{8}$."), "wrong", "7; 8"),
    ("choice", "C", r1(T, "I first thought $\\boxed{B}$, but only (C) fits the data: $\\boxed{C}$"), "correct", "C"),
    # a box in the thought never counts, even when the answer part has none
    ("math", "12", r1("6 + 4 = 10, so \\boxed{10}. No, I forgot two.", "The answer is 12."), "correct", "12"),
    ("math", "10", r1("6 + 4 = 10, so \\boxed{10}.", "I hope this helps."), "no_answer", None),
    ("number", "10", r1("So \\boxed{12}? No: 6 + 4.", "She has 10 apples."), "correct", "10"),
    ("math", "12", "First guess \\boxed{10}, but checking: \\boxed{12}, and then once more", "no_answer", None),
    # no box: "the answer is"
    ("math", "\\frac{3}{4}", r1(T, "So the answer is $\\frac{3}{4}$."), "correct", "\\frac{3}{4}"),
    ("math", "12", r1(T, "**Final Answer:** 12"), "correct", "12"),
    ("math", "12", r1(T, "We get 12 apples in total."), "no_answer", None),
    # the thought holds drafts: only the answer part counts
    ("math", "42", r1("Let me compute: 6*7... so \\boxed{41}? Wait, I miscounted, 6*7 = 42.", "$\\boxed{42}$"),
     "correct", "42"),
    ("math", "42", r1("6 times 7 is 42, so \\boxed{42}.", "Hmm, correcting: $\\boxed{41}$"), "wrong", "41"),
    # truncated thoughts: no `</think>`, no answer
    ("math", "42", "Let me compute 6*7. That is 42, so the answer is \\boxed{42}. But wait, let me double", "no_answer",
     None),
    ("math", "\\frac{1}{2}", "Okay, so I need to find the probability. Let's see, there are 6 outcomes and", "no_answer",
     None),
    ("math", "7", r1(T, ""), "no_answer", None),
    # math-verify's own leniency and strictness, recorded so that an upgrade that changes them shows here
    ("math", "0.1", r1(T, "The rate is $\\boxed{10\\%}$."), "correct", "10\\%"),
    ("math", "2", r1(T, "$\\boxed{x = 2}$"), "correct", "x = 2"),
    ("math", "\\{1,2\\}", r1(T, "$\\boxed{(2, 1)}$"), "correct", "(2, 1)"),
    ("math", "\\frac{1}{3}", r1(T, "$\\boxed{0.333}$"), "wrong", "0.333"),
    ("math", "1000", r1(T, "$\\boxed{1e3}$"), "wrong", "1e3"),
    ("math", "3", r1(T, "$\\boxed{\\text{three}}$"), "wrong", "\\text{three}"),
    # GSM8K numbers
    ("number", "1250", r1(T, "She earns $\\boxed{1,250}$ dollars."), "correct", "1,250"),
    ("number", "18", r1(T, "Janet makes $\\boxed{\\$18}$ every day."), "correct", "\\$18"),
    ("number", "18", r1(T, "$\\boxed{18 \\text{ dollars}}$"), "correct", "18 \\text{ dollars}"),
    ("number", "72", r1(T, "The answer is 72."), "correct", "72"),
    ("number", "3", r1(T, "$\\boxed{3.00}$"), "correct", "3.00"),
    ("number", "5", r1(T, "$\\boxed{5 \\times 12 = 60}$"), "wrong", "5 \\times 12 = 60"),
    ("number", "0.5", r1(T, "$\\boxed{\\frac{1}{2}}$ of a pizza"), "correct", "\\frac{1}{2}"),
    ("number", "20", r1(T, "The discount is $\\boxed{20\\%}$."), "correct", "20\\%"),
    ("number", "1000000", r1(T, "$\\boxed{1,000,000}$"), "correct", "1,000,000"),
    ("number", "7", "So 3 + 4 = 7, so the answer is \\boxed{7}. Let me verify this with another", "no_answer", None),
    # a number with neither box nor "the answer is": the last number written, as GSM8K graders do
    ("number", "1250", r1(T, "So she sells 1,250 eggs."), "correct", "1,250"),
    ("number", "8", r1(T, "4 + 4 = 8"), "correct", "8"),
    ("number", "8", r1(T, "4 + 4 = 8, then 8 - 4 = 4"), "wrong", "4"),
    ("number", "8", r1(T, "I cannot tell."), "no_answer", None),
    # GPQA letters
    ("choice", "C", r1(T, "The answer is $\\boxed{C}$."), "correct", "C"),
    ("choice", "C", r1(T, "$\\boxed{\\text{C}}$"), "correct", "\\text{C}"),
    ("choice", "C", r1(T, "$\\boxed{(C)}$"), "correct", "(C)"),
    ("choice", "B", r1(T, "$\\boxed{C}$"), "wrong", "C"),
    ("choice", "A", r1(T, "The answer is (A)."), "correct", "(A)"),
    ("choice", "D", r1(T, "$\\boxed{D) 3.2 \\text{ eV}}$"), "correct", "D) 3.2 \\text{ eV}"),
    ("choice", "C", r1(T, "Either $\\boxed{B}$ or $\\boxed{C}$."), "wrong", "B; C"),
]


@pytest.mark.parametrize("kind,gold,text,verdict,extracted", TABLE, ids=[f"{i:02d}-{r[0]}" for i, r in enumerate(TABLE)])
def test_grading_table(kind, gold, text, verdict, extracted):
    assert grade_answer(kind, gold, answer_part(text)) == Grade(verdict, extracted)


def test_grading_table_size():
    assert len(TABLE) >= 40
    assert {v for *_, v, _ in TABLE} >= {"correct", "wrong", "no_answer"}


def test_pool_gives_the_same_verdicts():
    items = [(kind, gold, answer_part(text)) for kind, gold, text, *_ in TABLE]
    with Grader(workers=2, timeout=60) as grader:
        grades = grader.grade(items)
    assert grades == [Grade(v, e) for *_, v, e in TABLE]


def test_answer_part():
    assert answer_part("thought</think>\n\nanswer") == "\n\nanswer"
    assert answer_part("a</think>b</think>c") == "c"
    assert answer_part("a thought cut off") is None
    assert answer_part("no thought at all", thought_open=False) == "no thought at all"
    assert answer_part("<think>opened here and cut", thought_open=False) is None


def test_boxed():
    assert boxed("\\boxed{\\frac{1}{2}} and \\boxed{x^{2}}") == ["\\frac{1}{2}", "x^{2}"]
    assert boxed("\\boxed 5.") == ["5"]
    assert boxed("\\fbox{7}") == ["7"]
    assert boxed("\\boxed{unclosed {") == []
    assert final_boxes("\\boxed{1}, then \\boxed{2}") == ["2"]
    assert final_boxes("$\\boxed{1}$ and $\\boxed{2}$, or $y_1 = \\boxed{3}$") == ["1", "2", "3"]
    assert final_boxes("\\boxed{1} and so \\boxed{2}") == ["2"]
    assert final_boxes("\\boxed{1} \\boxed{}") == ["1"] and final_boxes("no box") == []


def test_number_and_letter():
    assert number("\\$1,250.50") == Fraction(250100, 200)
    assert number("-3") == -3 and number("12-5=7") == 7
    assert number("\\dfrac{3}{4} \\text{ cups}") == Fraction(3, 4)
    assert number("no digits") is None
    assert last_number("from 1,250.5 to 2,000 and -3 more") == "-3" and last_number("x, 1,000,000") == "1,000,000"
    assert [letter(t) for t in ("C", "(b)", "\\textbf{D}", "**A**", "E", "Because")] == ["C", "B", "D", "A", None, None]


def slow_grade(kind: str, gold: str, answer: str | None) -> Grade:
    """A grader that hangs on answers saying "hang" (as sympy can on an adversarial expression): for 60 s, far past
    any timeout here, and then grades it, so that a timeout that never fires shows as a wrong verdict."""
    if answer and "hang" in answer:
        time.sleep(60)
    return grade_answer(kind, gold, answer)


def test_timeout_kills_the_worker_and_grades_the_rest():
    items = [("number", "1", "\\boxed{1}"), ("number", "2", "\\boxed{2} hang"), ("number", "3", "\\boxed{4}"),
             ("number", "4", "\\boxed{4}")]
    with Grader(workers=2, timeout=3, grade_fn=slow_grade) as grader:
        grades = grader.grade(items)
        assert grader.restarts == 1
        assert grader.grade_one("number", "5", "\\boxed{5}").correct  # the pool works again after the kill
    assert [g.verdict for g in grades] == ["correct", "timeout", "wrong", "correct"]
    assert grades[1].extracted == "2" and not grades[1].correct
