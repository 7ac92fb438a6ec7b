from __future__ import annotations

import random

import pytest

from quantkit.engine.reasoning import ReasoningSplitter, split_reasoning

EOS = "<｜end▁of▁sentence｜>"


def run(pieces, **kw):
    s = ReasoningSplitter(**kw)
    out = [p for piece in pieces for p in s.feed(piece)] + s.finish()
    joined = {"thought": "".join(p.text for p in out if p.kind == "thought"),
              "answer": "".join(p.text for p in out if p.kind == "answer")}
    assert joined == {"thought": s.thought, "answer": s.answer}  # streamed pieces add up to the totals
    return s


def test_whole_tags():
    s = run(["<think>", "\n", "2+2 is 4", "\n", "</think>", "\n\n", "The answer is 4."])
    assert s.thought == "\n2+2 is 4\n" and s.answer == "The answer is 4." and s.saw_close


@pytest.mark.parametrize("seed", range(20))
def test_tags_split_across_pieces(seed):
    text = "<think>\nLet me think. a<b and c>d.\n</think>\n\nDone: x</y."
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), 8))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
    s = run(pieces)
    assert s.thought == "\nLet me think. a<b and c>d.\n"
    assert s.answer == "Done: x</y."


def test_missing_opening_tag_when_prompt_opened_it():
    s = run(["Hmm, ", "so 4", ".\n</", "think>\n\n", "4"], in_thought=True)
    assert s.thought == "Hmm, so 4.\n" and s.answer == "4"


def test_missing_closing_tag():
    s = run(["<think>\n", "still thinking", " when the budget ran out"])
    assert s.thought == "\nstill thinking when the budget ran out" and s.answer == ""
    assert s.thought_unfinished and not s.saw_close


def test_empty_thought():
    s = run(["<think>", "\n\n", "</think>", "\n\n", "Hello!"])
    assert s.thought.strip() == "" and s.answer == "Hello!" and s.saw_close


def test_no_thought_at_all():
    s = run(["Hello", " there <b>"])
    assert s.thought == "" and s.answer == "Hello there <b>"


def test_text_after_eos_is_dropped():
    s = run(["<think>ok</think>", "Yes.", "<｜end▁of", "▁sentence｜>", "garbage"], eos=EOS)
    assert s.answer == "Yes." and s.ended


def test_partial_tag_at_the_end_is_flushed():
    s = run(["<think>a</thi"])
    assert s.thought == "a</thi"


def test_split_helper():
    assert split_reasoning("<think>x</think>\n\ny") == ("x", "y")
