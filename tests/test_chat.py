"""`quantkit chat` on SmolLM2: the library's turns (finish reasons, counts, KV-cache reuse, Ctrl-C), one-shot
--json, where the thought and the answer go, and clean failures."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quantkit.chat import ChatSession, Sampling, Turn
from quantkit.engine import GenerationResult
from quantkit.cli.app import app
from quantkit.engine.reasoning import Piece
from quantkit.runtime import load_vocabulary
from tests.test_bad_inputs import assert_clean_failure

runner = CliRunner()
pytestmark = pytest.mark.slow

KEYS = ["reasoning", "answer", "prompt_tokens", "reasoning_tokens", "answer_tokens", "prompt_tps", "gen_tps",
        "finish_reason", "forced_tokens", "budget_reached", "looped", "prompt_eval_tokens", "drafted_tokens",
        "accepted_tokens"]


@pytest.fixture(scope="module")
def session(smollm2_gguf):
    with ChatSession.open(smollm2_gguf, n_ctx=512, n_gpu_layers=0, threads=1, sampling=Sampling(temperature=0)) as s:
        yield s


def _run(gen) -> list[Piece]:
    return list(gen)


def test_one_shot_json(smollm2_gguf):
    args = ["chat", str(smollm2_gguf), "--prompt", "What is the capital of France?", "-n", "12", "--json",
            "--seed", "7", "--threads", "1", "-ngl", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == KEYS
    assert out["reasoning"] == "" and out["reasoning_tokens"] == 0  # ChatML: no thought, none forced
    assert out["answer"].strip() and out["answer_tokens"] >= 1
    assert out["finish_reason"] in ("stop", "length")
    assert (out["answer_tokens"] == 12) == (out["finish_reason"] == "length")
    assert out["prompt_tps"] > 0 and out["gen_tps"] > 0
    with load_vocabulary(smollm2_gguf) as vocab:
        from quantkit.engine.templates import model_template

        text, _ = model_template(vocab).prompt([{"role": "user", "content": "What is the capital of France?"}])
        assert out["prompt_tokens"] == len(vocab.prompt_tokens(text))
        # the answer re-tokenized gives back about the generated count (BPE may merge across token edges)
        retok = len(vocab.tokenize(out["answer"].encode(), add_special=False))
        assert abs(retok - out["answer_tokens"]) <= 2, (retok, out)
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["answer"] == out["answer"]  # same seed, same words


def test_prompt_from_stdin_answer_on_stdout(smollm2_gguf):
    result = runner.invoke(app, ["chat", str(smollm2_gguf), "-n", "8", "--threads", "1", "-ngl", "0",
                                 "--temperature", "0"], input="Say hello.\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert "gen " in result.stderr and "tok/s" in result.stderr and "CPU" in result.stderr
    assert "tok/s" not in result.stdout


class _FakeSession:
    """Stands in for ChatSession to check where the CLI writes a thought and an answer."""

    def __init__(self):
        self.turns = []

    def send(self, text, n_predict):
        self.turns.append(Turn(text, GenerationResult(reasoning="weighing it", answer="**4**", reasoning_tokens=3,
                                                answer_tokens=2, finish_reason="stop")))
        yield Piece("thought", "weighing ")
        yield Piece("thought", "it")
        yield Piece("answer", "**4**")


@pytest.mark.parametrize("think", ["show", "hide", "summary"])
def test_one_shot_thought_goes_to_stderr(think, capsys):
    from quantkit.cli.chat import Think, _one_shot

    _one_shot(_FakeSession(), "2+2?", None, json=False, think=Think(think))
    out, err = capsys.readouterr()
    assert out == "**4**\n"
    assert ("weighing it" in err) == (think != "hide")  # the summary line quotes how the thought began
    assert ("thought for" in err) == (think == "summary")
    assert "thought 3 tok · answer 2 tok" in err


def test_length_and_counts(session):
    session.clear()
    pieces = _run(session.send("Tell me about the sea.", max_tokens=10))
    r = session.turns[-1].result
    assert r.finish_reason == "length" and r.gen_tokens == 10 and r.answer_tokens == 10
    assert "".join(p.text for p in pieces) == r.answer and r.answer == r.text.lstrip("\n")
    assert session.tokens_used == r.prompt_tokens + 10


def test_second_turn_reuses_the_cache_and_matches_a_fresh_start(session, smollm2_gguf):
    session.clear()
    _run(session.send("Name a colour.", max_tokens=6))
    _run(session.send("Name another one.", max_tokens=6))
    first, second = (t.result for t in session.turns)
    assert second.prompt_eval_tokens < second.prompt_tokens  # the first turn's tokens were kept
    with ChatSession.open(smollm2_gguf, n_ctx=512, n_gpu_layers=0, threads=1,
                          sampling=Sampling(temperature=0)) as fresh:
        fresh.turns = [Turn("Name a colour.", first)]
        _run(fresh.send("Name another one.", max_tokens=6))
        again = fresh.turns[-1].result
    assert again.prompt_eval_tokens == again.prompt_tokens == second.prompt_tokens
    assert again.text == second.text  # greedy: the reused cache gives the same logits


def test_context_full(smollm2_gguf):
    with ChatSession.open(smollm2_gguf, n_ctx=48, n_gpu_layers=0, threads=1) as s:
        _run(s.send("Write a long story about a dragon."))
        r = s.turns[-1].result
        if r.finish_reason == "stop":
            pytest.skip("the model ended its answer before the context filled")
        assert r.finish_reason == "context" and r.prompt_tokens + r.gen_tokens == 48 == s.tokens_used
        from quantkit.errors import ContextFullError

        with pytest.raises(ContextFullError):
            _run(s.send("Go on."))


def test_interrupted_turn_is_kept_and_the_next_one_works(session):
    session.clear()
    gen = session.send("Count from one to twenty.", max_tokens=30)
    got = [next(gen) for _ in range(3)]
    gen.close()  # what Ctrl-C does through the CLI
    r = session.turns[-1].result
    assert r.finish_reason == "interrupted" and r.answer.startswith("".join(p.text for p in got).lstrip("\n"))
    assert session.tokens_used == 0  # the cache is rebuilt from the history next turn
    _run(session.send("Thanks.", max_tokens=4))
    assert session.turns[-1].result.prompt_eval_tokens == session.turns[-1].result.prompt_tokens
    assert len(session.turns) == 2


def test_regenerate_replaces_the_last_turn(session):
    session.clear()
    _run(session.send("Hi!", max_tokens=4))
    _run(session.regenerate(max_tokens=4))
    assert len(session.turns) == 1 and session.turns[0].user == "Hi!"


def test_not_gguf(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    assert_clean_failure(["chat", str(bad), "-p", "hi"], "not a GGUF file")


def test_label_without_file_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = assert_clean_failure(["chat", "7B", "-t", "Q4_K_M", "-p", "hi"], "no Q4_K_M GGUF")
    assert "quantkit convert 7B -t Q4_K_M" in err


def test_bad_sampling_values(smollm2_gguf):
    assert_clean_failure(["chat", str(smollm2_gguf), "-p", "hi", "--top-p", "0"], "--top-p")
    assert_clean_failure(["chat", str(smollm2_gguf), "-p", "hi", "-n", "0"], "--n-predict")


@pytest.mark.skipif(not __import__("llama_cpp").llama_supports_gpu_offload(),
                    reason="llama-cpp-python is a CPU build (llama_supports_gpu_offload() is false): "
                           "reinstall it with CMAKE_ARGS=-DGGML_CUDA=on to run this")
def test_layers_land_on_the_gpu(smollm2_gguf, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="quantkit.llama_cpp")
    with ChatSession.open(smollm2_gguf, n_ctx=512, n_gpu_layers="all") as s:
        assert s.model.layers_on_gpu == s.model.n_layer + 1
        _run(s.send("Hi", max_tokens=4))
        assert s.turns[-1].result.gen_tokens >= 1
    log = caplog.text
    assert f"offloaded {s.model.n_layer + 1}/{s.model.n_layer + 1} layers to GPU" in log, log[-2000:]


def test_interactive_turn_warns_before_the_context_fills(capsys):
    from quantkit.cli.chat import Interactive, Think

    fake = _FakeSession()
    fake.n_ctx, fake.tokens_used = 1000, 850
    Interactive(fake, Think.hide, None)._turn(lambda: fake.send("2+2?", None))
    out = capsys.readouterr().out
    assert "the context is 85% full (850/1000 tokens)" in out and "**4**" not in out  # rendered as Markdown
    fake.tokens_used = 500
    Interactive(fake, Think.hide, None)._turn(lambda: fake.send("2+2?", None))
    assert "context is" not in capsys.readouterr().out
