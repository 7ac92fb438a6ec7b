"""The prompt llama.cpp receives in a multi-turn R1 conversation, rendered with the R1-Distill templates from the
GGUF and tokenized by llama.cpp with the R1 vocabularies: BOS once, earlier thoughts gone, `<think>\\n` once at
the end — and SmolLM2's ChatML template left alone."""
from __future__ import annotations

import pytest

from quantkit.runtime import load_vocabulary
from quantkit.chat import MATH_INSTRUCTION, Conversation, Turn
from quantkit.engine import GenerationResult
from quantkit.engine.templates import ChatTemplate, model_template
from tests._fixtures.r1_vocab import R1_VOCABS, r1_vocab_gguf

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp

THOUGHT_1 = "The user wants 2+2. Adding gives 4, SECRET-ONE."
THOUGHT_2 = "Now 3+3, which is 6, SECRET-TWO."


@pytest.fixture(scope="module", params=sorted(R1_VOCABS))
def r1_vocab(request):
    model = load_vocabulary(r1_vocab_gguf(request.param))
    yield request.param, model
    model.close()


def _token_id(model, text: str) -> int:
    ids = model.tokenize(text.encode(), add_special=False, parse_special=True)
    assert len(ids) == 1, (text, ids)
    return int(ids[0])


def _finished(text: str, opened: bool = True) -> GenerationResult:
    """A turn as the session records it: the generated text (the opening tag was in the prompt)."""
    from quantkit.engine.reasoning import split_reasoning

    thought, answer = split_reasoning(text, in_thought=opened)
    return GenerationResult(reasoning=thought, answer=answer, text=text, thought_unfinished="</think>" not in text)


def _session(model, **kw) -> Conversation:
    # rendering needs no weights: the history, the template and the tokenizer are all there is to it
    return Conversation(model_template(model), **kw)


def test_three_turns(r1_vocab):
    family, model = r1_vocab
    spec = R1_VOCABS[family]
    session = _session(model)
    assert session.template.knows_think
    session.turns = [
        Turn("What is 2+2?", _finished(f"{THOUGHT_1}\n</think>\n\nIt is **4**.")),
        Turn("And 3+3?", _finished(f"{THOUGHT_2}\n</think>\n\n6.")),
    ]
    text, opened = session.render("And 4+4?")
    assert opened
    tokens = model.prompt_tokens(text).tolist()
    pieces = "".join(model.token_piece(t, special=True).decode() for t in tokens)

    bos, eos = spec["bos"], spec["eos"]
    think, end_think = _token_id(model, "<think>"), _token_id(model, "</think>")
    user, assistant = _token_id(model, "<｜User｜>"), _token_id(model, "<｜Assistant｜>")
    assert tokens[0] == bos and tokens.count(bos) == 1
    assert tokens.count(think) == 1 and tokens[-2:] == [think, _token_id(model, "\n")]
    assert end_think not in tokens
    assert "SECRET" not in pieces and "2+2" in pieces and "It is **4**." in pieces and "6." in pieces
    assert tokens.count(user) == 3 and tokens.count(assistant) == 3
    assert tokens.count(eos) == 2  # each finished assistant turn closed with end-of-sentence
    assert tokens[-3] == assistant


def test_cut_off_thought_is_dropped(r1_vocab):
    _, model = r1_vocab
    session = _session(model)
    session.turns = [Turn("Long question", _finished("thinking and thinking SECRET-CUT"))]
    text, _ = session.render("Shorter, please.")
    assert "SECRET" not in text
    pieces = "".join(model.token_piece(t, special=True).decode() for t in model.prompt_tokens(text))
    assert pieces.count("<think>") == 1 and pieces.endswith("<｜Assistant｜><think>\n")


def test_old_template_without_think_gets_it_forced(r1_vocab):
    """Older R1 GGUFs end the generation prompt at <｜Assistant｜>: the thought is opened for the model."""
    _, model = r1_vocab
    new = model_template(model)
    old = ChatTemplate(new.source.replace("{{'<｜Assistant｜><think>\\n'}}", "{{'<｜Assistant｜>'}}"),
                       new.bos_token, new.eos_token)
    assert old.source != new.source
    messages = [{"role": "user", "content": "hi"}]
    assert old.render(messages).endswith("<｜Assistant｜>")
    assert old.prompt(messages) == new.prompt(messages)
    text, opened = old.prompt(messages)
    assert opened and text.endswith("<｜Assistant｜><think>\n") and text.count("<think>") == 1


def test_qwen_template_is_not_told_to_skip_thinking(r1_vocab):
    """llama.cpp's Qwen-32B copy closes the thought unless enable_thinking is set."""
    _, model = r1_vocab
    text, _ = model_template(model).prompt([{"role": "user", "content": "hi"}])
    assert "</think>" not in text


def test_math_and_system(r1_vocab):
    _, model = r1_vocab
    session = _session(model, math=True, system="Be brief.")
    text, _ = session.render("Solve x+1=2")
    assert text.startswith("<｜begin▁of▁sentence｜>Be brief.<｜User｜>Solve x+1=2\n" + MATH_INSTRUCTION)


def test_chatml_is_not_forced_to_think(smollm2_gguf):
    with load_vocabulary(smollm2_gguf) as model:
        session = _session(model)
        session.turns = [Turn("hi", GenerationResult(answer="Hello!", text="Hello!"))]
        text, opened = session.render("bye")
        assert not opened and not session.template.knows_think
        assert text.endswith("<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n")
        assert "<|im_start|>assistant\nHello!<|im_end|>" in text and "<think>" not in text
        tokens = model.prompt_tokens(text).tolist()
        im_start = int(model.tokenize(b"<|im_start|>", False, True)[0])
        assert tokens.count(im_start) == 5 and tokens[0] == im_start  # SmolLM2 adds no BOS
