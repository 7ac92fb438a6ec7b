"""Chat through real llama.cpp generation on the scripted R1 model (tests/_fixtures/scripted.py), whose reply is
known in advance: the reasoning split, the token counts, the pieces as they stream, a budget that cuts the thought
or the answer, the second turn's history and KV-cache reuse, and `quantkit chat --json` — for both templates
(one ends its generation prompt with `<think>\\n`, one leaves it to chat), greedy and at R1's temperature."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from quantkit.chat import ChatSession, Sampling
from quantkit.cli.app import app
from quantkit.engine.reasoning import Piece
from quantkit.runtime import load_vocabulary
from quantkit.engine.templates import ChatTemplate
from tests._fixtures import scripted as S
from tests._fixtures.gguf_tensors import tensor_table

runner = CliRunner()
QUESTION, FOLLOW_UP = "What is 2+2?", "And 3+3?"
BOS, USER, EOS = "<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜end▁of▁sentence｜>"
GREEDY, R1 = Sampling(temperature=0), Sampling(seed=1234)  # R1: temperature 0.6, top-p 0.95, top-k 40
HOT = Sampling(temperature=1.5, top_p=1.0, top_k=0, seed=99)  # the whole vocabulary, flattened: the margin holds


@pytest.fixture(params=S.VARIANTS)
def gguf(request):
    return request.getfixturevalue({"think": "scripted_gguf", "bare": "scripted_bare_gguf"}[request.param])


def _session(path, sampling=GREEDY, **kwargs) -> ChatSession:
    return ChatSession.open(path, n_ctx=512, n_gpu_layers=0, threads=1, sampling=sampling, **kwargs)


def _n_tokens(session: ChatSession, text: str) -> int:
    return len(session.model.tokenize(text.encode(), add_special=False, parse_special=False))


def _weights(path) -> dict[str, np.ndarray]:
    table = tensor_table(path)
    out = {}
    for name, (qtype, dims, data) in table.items():
        if qtype.name == "BF16":
            values = (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            values = np.frombuffer(data, np.float32)
        out[name] = values.reshape(dims[::-1])
    return out


def test_the_weights_map_each_token_to_its_successor(scripted_gguf):
    """A numpy forward pass from the GGUF's own bytes: the blocks add nothing to the residual stream, so the
    logits are output · norm(embedding), and each scripted token's successor leads by at least 30."""
    w = _weights(scripted_gguf)
    assert not w["blk.0.attn_output.weight"].any() and not w["blk.0.ffn_down.weight"].any()
    embd, output = w["token_embd.weight"], w["output.weight"]
    assert set(np.flatnonzero(np.abs(embd).sum(axis=1))) == set(S.SUCCESSORS)
    for token, nxt in S.SUCCESSORS.items():
        x = embd[token]
        logits = output @ (x / np.sqrt(np.mean(x * x) + 1e-6) * w["output_norm.weight"])
        runner_up = np.max(np.delete(logits, nxt))
        assert np.argmax(logits) == nxt and logits[nxt] - runner_up >= 30, (token, nxt, logits[nxt], runner_up)


def test_the_script_tokenizes_to_the_planned_ids(gguf):
    with load_vocabulary(gguf) as vocab:
        def ids(text):
            return tuple(vocab.tokenize(text.encode(), add_special=False, parse_special=True).tolist())

        assert ids(S.THOUGHT) == S.THOUGHT_IDS
        assert ids(S.ANSWER) == S.ANSWER_IDS
        assert ids(S.TEXT) == S.TEXT_IDS and ids(S.RAW_TEXT) == S.RAW_IDS
        assert ids(S.ASSISTANT + S.THINK + "\n") == (151645, 151648, 198)
        assert ids(S.SHORT_PROMPT)[-1] == S.SHORT_IDS[0] and ids(S.LOOP_PROMPT)[-1] == S.LOOP_IDS[0]
        assert int(vocab.bos) == 151646


def test_the_templates_end_the_generation_prompt_as_described(scripted_gguf, scripted_bare_gguf):
    messages = [{"role": "user", "content": QUESTION}]
    prompts = {}
    for path, ends in ((scripted_gguf, S.ASSISTANT + S.THINK + "\n"), (scripted_bare_gguf, S.ASSISTANT)):
        with _session(path) as session:
            assert session.template.render(messages) == BOS + USER + QUESTION + ends
            prompts[path] = session.render(QUESTION)
    # chat forces `<think>\n` where the template does not write it: the same prompt either way
    assert list(prompts.values()) == [(BOS + USER + QUESTION + S.ASSISTANT + S.THINK + "\n", True)] * 2


@pytest.mark.parametrize("sampling", [GREEDY, R1, HOT], ids=["greedy", "r1", "hot"])
def test_reply_follows_the_script(gguf, sampling):
    with _session(gguf, sampling) as session:
        pieces = list(session.send(QUESTION))
        r = session.turns[-1].result
        n_prompt = _n_tokens(session, QUESTION) + 5  # BOS, <｜User｜>, …, <｜Assistant｜>, <think>, "\n"
    assert pieces == [Piece("thought", t) for t in S.THOUGHT_PIECES] + [Piece("answer", t) for t in S.ANSWER_PIECES]
    assert (r.reasoning, r.answer, r.text) == (S.THOUGHT, S.ANSWER, S.TEXT)
    assert (r.reasoning_tokens, r.answer_tokens) == (S.REASONING_TOKENS, S.ANSWER_TOKENS) == (14, 9)
    assert r.finish_reason == "stop" and not r.thought_unfinished
    assert r.prompt_tokens == r.prompt_eval_tokens == n_prompt
    assert r.history_text == "\n\n" + S.ANSWER


@pytest.mark.parametrize("sampling", [GREEDY, R1], ids=["greedy", "r1"])
def test_n_predict_cuts_the_thought(gguf, sampling):
    with _session(gguf, sampling) as session:
        pieces = list(session.send(QUESTION, max_tokens=5))
        r = session.turns[-1].result
    thought = "".join(S.THOUGHT_PIECES[:5])
    assert pieces == [Piece("thought", t) for t in S.THOUGHT_PIECES[:5]]
    assert (r.reasoning, r.answer, r.text) == (thought, "", thought)
    assert (r.reasoning_tokens, r.answer_tokens) == (5, 0)
    assert r.finish_reason == "length" and r.thought_unfinished
    assert r.history_text == ""  # nothing of a thought that never closed goes into the next prompt


def test_n_predict_cuts_the_answer(gguf):
    n = S.REASONING_TOKENS + 3  # the thought, </think>, "\n\n" and two answer tokens
    with _session(gguf, R1) as session:
        list(session.send(QUESTION, max_tokens=n))
        r = session.turns[-1].result
    assert (r.reasoning, r.answer) == (S.THOUGHT, "".join(S.ANSWER_PIECES[:2]))
    assert (r.reasoning_tokens, r.answer_tokens) == (S.REASONING_TOKENS, 3)
    assert r.finish_reason == "length" and not r.thought_unfinished


def test_second_turn_keeps_the_answer_not_the_thought(gguf):
    with _session(gguf, R1) as session:
        list(session.send(QUESTION))
        first_prompt = session.turns[-1].result.prompt_tokens
        assert session.messages(user=FOLLOW_UP) == [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "\n\n" + S.ANSWER},
            {"role": "user", "content": FOLLOW_UP},
        ]
        text, opened = session.render(FOLLOW_UP)
        assert opened
        assert text == (BOS + USER + QUESTION + S.ASSISTANT + "\n\n" + S.ANSWER + EOS
                        + USER + FOLLOW_UP + S.ASSISTANT + S.THINK + "\n")
        assert S.THOUGHT.strip() not in text and S.END_THINK not in text
        list(session.send(FOLLOW_UP))
        r = session.turns[-1].result
        # turn 1's prompt without its <think> "\n", then "\n\n", the answer, EOS, <｜User｜>, the question,
        # <｜Assistant｜>, <think>, "\n"
        n_prompt = first_prompt - 2 + 1 + len(S.ANSWER_IDS) + 2 + _n_tokens(session, FOLLOW_UP) + 3
    assert (r.reasoning, r.answer, r.finish_reason) == (S.THOUGHT, S.ANSWER, "stop")
    assert r.prompt_tokens == n_prompt
    # the KV cache still holds turn 1's prompt up to its <｜Assistant｜>: only the rest is evaluated
    assert r.prompt_eval_tokens == n_prompt - (first_prompt - 2)


@pytest.mark.parametrize("prompt, text, n, finish", [
    (S.ASSISTANT, S.RAW_TEXT, None, "stop"),
    (S.SHORT_PROMPT, S.SHORT_TEXT, None, "stop"),
    (S.LOOP_PROMPT, S.loop_text(7), 7, "length"),
], ids=["reply", "short", "loop"])
def test_raw_prompts_follow_their_paths(scripted_gguf, prompt, text, n, finish):
    """What serve's raw completions will see: the prompt's last token picks the path."""
    raw = ChatTemplate("{{ messages[-1]['content'] }}")  # no template around the prompt, no forced <think>
    with _session(scripted_gguf, R1, template=raw) as session:
        list(session.send(prompt, max_tokens=n))
        r = session.turns[-1].result
    assert (r.text, r.finish_reason) == (text, finish)
    assert r.gen_tokens == {S.ASSISTANT: len(S.RAW_IDS), S.SHORT_PROMPT: 2, S.LOOP_PROMPT: 7}[prompt]


def test_cli_json(gguf):
    args = ["chat", str(gguf), "--prompt", QUESTION, "--json", "--seed", "7", "--threads", "1", "-ngl", "0",
            "--ctx", "512"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    with load_vocabulary(gguf) as vocab:
        n_prompt = len(vocab.tokenize(QUESTION.encode(), add_special=False)) + 5
    assert {k: out[k] for k in ("reasoning", "answer", "reasoning_tokens", "answer_tokens", "finish_reason",
                                "prompt_tokens")} == dict(
        reasoning=S.THOUGHT, answer=S.ANSWER, reasoning_tokens=S.REASONING_TOKENS, answer_tokens=S.ANSWER_TOKENS,
        finish_reason="stop", prompt_tokens=n_prompt)


def test_cli_prints_the_answer_on_stdout_and_the_thought_on_stderr(gguf):
    args = ["chat", str(gguf), "--prompt", QUESTION, "--threads", "1", "-ngl", "0", "--ctx", "512"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == S.ANSWER + "\n"
    assert S.THOUGHT.strip() in result.stderr and S.ANSWER not in result.stderr


def test_cli_n_predict_inside_the_thought(gguf):
    args = ["chat", str(gguf), "--prompt", QUESTION, "--json", "-n", "4", "--threads", "1", "-ngl", "0",
            "--ctx", "512"]
    out = json.loads(runner.invoke(app, args).stdout)
    assert (out["reasoning"], out["answer"], out["reasoning_tokens"], out["answer_tokens"], out["finish_reason"]) \
        == ("".join(S.THOUGHT_PIECES[:4]), "", 4, 0, "length")


# ---- a thought under control: the reasoning budget and the loop guard ---------------------------------------

from quantkit.engine.thinking import BUDGET_MESSAGE, Thinking  # noqa: E402

N_CLOSING = 16  # BUDGET_MESSAGE's 14 tokens, </think>, "\n\n" (tests/_fixtures/scripted.py: closing_tokens())


def _json_turn(path, *extra) -> dict:
    args = ["chat", str(path), "--prompt", QUESTION, "--json", "--threads", "1", "-ngl", "0", "--ctx", "512", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_closing_text_tokens():
    assert S.closing_tokens() == N_CLOSING and S.closing_tokens("Stop.") == 4  # "Stop", ".", </think>, "\n\n"


@pytest.mark.parametrize("sampling", [GREEDY, R1], ids=["greedy", "r1"])
def test_budget_closes_the_thought_and_the_answer_follows(gguf, sampling):
    with _session(gguf, sampling, thinking=Thinking(budget=5)) as session:
        pieces = list(session.send(QUESTION))
        r = session.turns[-1].result
    thought = "".join(S.THOUGHT_PIECES[:5]) + BUDGET_MESSAGE
    assert "".join(p.text for p in pieces if p.kind == "thought") == thought
    assert [p for p in pieces if p.kind == "answer"] == [Piece("answer", t) for t in S.ANSWER_PIECES]
    assert (r.reasoning, r.answer) == (thought, S.ANSWER)
    assert r.text == thought + S.END_THINK + "\n\n" + S.ANSWER
    assert (r.reasoning_tokens, r.answer_tokens, r.forced_tokens) == (5 + N_CLOSING - 1, S.ANSWER_TOKENS, N_CLOSING)
    assert r.sampled_tokens == 5 + len(S.ANSWER_IDS)  # the model's own: 5 thought tokens and the answer
    assert r.budget_reached and not r.looped and r.finish_reason == "stop" and not r.thought_unfinished
    assert r.history_text == "\n\n" + S.ANSWER


def test_a_budget_the_thought_stays_inside_changes_nothing(scripted_gguf):
    with _session(scripted_gguf, thinking=Thinking(budget=S.REASONING_TOKENS)) as session:
        list(session.send(QUESTION))
        r = session.turns[-1].result
    assert (r.reasoning, r.answer, r.forced_tokens, r.budget_reached) == (S.THOUGHT, S.ANSWER, 0, False)


def test_budget_zero_puts_an_empty_thought_in_the_prompt(gguf):
    with _session(gguf, R1, thinking=Thinking(budget=0)) as session:
        pieces = list(session.send(QUESTION))
        r = session.turns[-1].result
        n_prompt = _n_tokens(session, QUESTION) + 5 + 3  # and "\n", </think>, "\n\n"
    assert pieces == [Piece("answer", t) for t in S.ANSWER_PIECES]
    assert (r.reasoning, r.answer, r.reasoning_tokens, r.answer_tokens) == ("", S.ANSWER, 0, len(S.ANSWER_IDS))
    assert r.prompt_tokens == n_prompt and r.forced_tokens == 0 and r.finish_reason == "stop"


def test_closing_text_cut_by_max_tokens(scripted_gguf):
    """max_tokens counts the forced tokens too: the closing text is cut where the budget of tokens ends."""
    with _session(scripted_gguf, thinking=Thinking(budget=5)) as session:
        list(session.send(QUESTION, max_tokens=8))
        r = session.turns[-1].result
    assert (r.gen_tokens, r.forced_tokens, r.finish_reason) == (8, 3, "length") and r.thought_unfinished


def test_budget_with_its_own_message_on_a_thought_that_goes_on(scripted_loop_gguf):
    with _session(scripted_loop_gguf, thinking=Thinking(budget=20, message=" Stop.")) as session:
        list(session.send(QUESTION))
        r = session.turns[-1].result
    assert (r.reasoning, r.answer) == (S.loop_thought(20) + " Stop.", S.ANSWER)
    assert (r.reasoning_tokens, r.answer_tokens, r.forced_tokens) == (20 + 4 - 1, S.ANSWER_TOKENS, 4)


def test_loop_guard_ends_the_thought_at_the_predicted_token(scripted_loop_gguf):
    from quantkit.engine.thinking import find_loop

    assert find_loop(S.loop_thought_ids(200)) == S.LOOP_FIRES_AT == 49
    with _session(scripted_loop_gguf, R1, thinking=Thinking(loop_guard="end")) as session:
        list(session.send(QUESTION))
        r = session.turns[-1].result
    assert (r.reasoning, r.answer) == (S.loop_thought(49) + BUDGET_MESSAGE, S.ANSWER)
    assert (r.reasoning_tokens, r.answer_tokens, r.forced_tokens) == (49 + N_CLOSING - 1, S.ANSWER_TOKENS, N_CLOSING)
    assert r.looped and not r.budget_reached and r.finish_reason == "stop"


def test_loop_guard_stop_ends_the_generation(scripted_loop_gguf):
    with _session(scripted_loop_gguf, thinking=Thinking(loop_guard="stop")) as session:
        list(session.send(QUESTION))
        r = session.turns[-1].result
    assert (r.reasoning, r.answer, r.reasoning_tokens, r.forced_tokens) == (S.loop_thought(49), "", 49, 0)
    assert r.looped and r.thought_unfinished and r.finish_reason == "stop"


def test_loop_guard_off_lets_it_loop(scripted_loop_gguf):
    with _session(scripted_loop_gguf, thinking=Thinking(loop_guard="off")) as session:
        list(session.send(QUESTION, max_tokens=100))
        r = session.turns[-1].result
    assert (r.reasoning, r.finish_reason, r.looped) == (S.loop_thought(100), "length", False)


def test_cli_json_budget_and_guard(gguf, scripted_loop_gguf):
    out = _json_turn(gguf, "--reasoning-budget", "5")
    assert (out["reasoning"], out["answer"]) == ("".join(S.THOUGHT_PIECES[:5]) + BUDGET_MESSAGE, S.ANSWER)
    assert (out["reasoning_tokens"], out["answer_tokens"], out["forced_tokens"]) == (20, 9, 16)
    assert out["budget_reached"] and not out["looped"] and out["finish_reason"] == "stop"
    out = _json_turn(gguf, "--reasoning-budget", "0")
    assert (out["reasoning"], out["answer"], out["reasoning_tokens"], out["answer_tokens"]) == ("", S.ANSWER, 0, 8)
    out = _json_turn(scripted_loop_gguf, "--reasoning-budget-message", " Stop.")  # the guard is on by default
    assert (out["reasoning"], out["answer"], out["forced_tokens"], out["looped"]) == (
        S.loop_thought(49) + " Stop.", S.ANSWER, 4, True)
    out = _json_turn(scripted_loop_gguf, "--loop-guard", "stop")
    assert (out["reasoning"], out["answer"], out["looped"]) == (S.loop_thought(49), "", True)


def test_cli_stats_line_names_what_the_engine_did(scripted_loop_gguf):
    args = ["chat", str(scripted_loop_gguf), "--prompt", QUESTION, "--threads", "1", "-ngl", "0", "--ctx", "512"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and result.stdout == S.ANSWER + "\n"
    assert "· thought 64 tok · answer 9 tok · forced 16 tok · looped" in result.stderr


def test_cli_budget_bad_inputs(scripted_gguf, smollm2_gguf):
    from tests.test_bad_inputs import assert_clean_failure

    assert_clean_failure(["chat", str(scripted_gguf), "-p", "hi", "--reasoning-budget", "-1", "-ngl", "0"],
                         "--reasoning-budget must be ≥ 0")
    # a model whose template has no <think>: one warning line, and the answer
    result = runner.invoke(app, ["chat", str(smollm2_gguf), "-p", "hi", "-n", "2", "--reasoning-budget", "5",
                                 "--threads", "1", "-ngl", "0", "--ctx", "512", "--json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: --reasoning-budget has no effect: {smollm2_gguf.name}'s chat template has no "
                        "<think>"]
    assert json.loads(result.stdout)["forced_tokens"] == 0
