"""`quantkit eval --reasoning-budget 5,20,50,55` on the scripted models: one samples file per budget, and a larger
budget's samples whose thought ended before a smaller budget reused for it — never generated twice, and the same
records a run of that budget alone makes.

The scripted reply's thought is 13 tokens of its own (then `</think>`): it ends by itself under 20, 50 and 55 and
is cut by the budget 5. The looping model's thought (loop guard `end`) is ended by the guard at token 49: under 50
and 55 the guard ends it, under 20 and 5 the budget does. So, generated in the order 55, 50, 20, 5:
scripted 55 made, 50 and 20 reused, 5 made; looping 55 made, 50 reused, 20 and 5 made."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.engine.thinking import BUDGET_MESSAGE
from quantkit.eval import read_samples
from quantkit.eval.runner import Protocol, eval_table, evaluate, evaluate_budgets
from quantkit.eval.tasks import read_task_file
from tests._fixtures import scripted
from tests.test_bad_inputs import assert_clean_failure
from tests.test_eval_runner import task_file

pytestmark = pytest.mark.slow
runner = CliRunner()

BUDGETS = [20, 5, 55, 50]  # given in any order: evaluated largest first, reported smallest first
PROTOCOL = Protocol(samples=2, seed=3, max_tokens=200, loop_guard="end")
RUN = dict(parallel=2, n_ctx=1024, n_gpu_layers=0, threads=2)
MADE = {5: (4, 4), 20: (0, 4), 50: (0, 0), 55: (4, 4)}  # (scripted, looping) samples generated per budget
COMPARED = ("problem_id", "sample", "seed", "text", "reasoning", "answer", "extracted", "verdict", "prompt_tokens",
            "reasoning_tokens", "answer_tokens", "finish_reason", "forced_tokens", "budget_reached", "looped",
            "thought_tokens")


def _fields(samples) -> list[tuple]:
    return sorted(tuple(getattr(s, f) for f in COMPARED) for s in samples)


@pytest.fixture
def looping_gguf(tmp_path, scripted_loop_gguf):
    """The looping model under a name of its own (both variants' files are named alike, and a samples file is
    named after its model's file)."""
    path = tmp_path / "Looping-BF16.gguf"
    path.symlink_to(scripted_loop_gguf)
    return path


def test_each_budget_its_file_and_reuse_counted_exactly(tmp_path, scripted_gguf, looping_gguf):
    problems = read_task_file(task_file(tmp_path, ["4", "5"]))
    calls: list[tuple[str, int]] = []  # the runner reports each model's start, then each sample it generated

    results = evaluate_budgets([scripted_gguf, looping_gguf], problems, "mine", BUDGETS, PROTOCOL,
                               out_dir=tmp_path / "eval", progress=lambda name, done, total: calls.append((name, done)),
                               **RUN)
    assert [r.protocol.reasoning_budget for r in results] == [5, 20, 50, 55]
    assert len({m.samples_file for r in results for m in r.models}) == 8  # one samples file per model and budget
    for r in results:
        base, looping = eval_table(r)
        b = r.protocol.reasoning_budget
        assert (base["new_samples"], looping["new_samples"]) == MADE[b]
        assert (base["reused_samples"], looping["reused_samples"]) == (4 - MADE[b][0], 4 - MADE[b][1])
        assert base["pass_at_1"] == looping["pass_at_1"] == 0.5  # "4" right, "5" wrong, whatever the budget
        assert looping["looped_pct"] == (100 if b >= 50 else 0) and base["looped_pct"] == 0
        assert base["budget_reached_pct"] == (100 if b == 5 else 0)
        assert looping["budget_reached_pct"] == (100 if b <= 20 else 0)
        n = 49 if b >= 50 else b
        for s in read_samples(looping["samples_file"]):
            assert (s.reasoning, s.answer, s.thought_tokens) == (scripted.loop_thought(n) + BUDGET_MESSAGE,
                                                                scripted.ANSWER, n)
        for s in read_samples(base["samples_file"]):
            assert s.thought_tokens == (5 if b == 5 else len(scripted.THOUGHT_IDS))
            assert s.extra.get("reused_from") == (None if b in (5, 55) else Path(eval_table(results[3])[0]
                                                                                   ["samples_file"]).name)
    generated = sum(1 for (n0, d0), (n1, d1) in zip(calls, calls[1:]) if n0 == n1 and d1 == d0 + 1)
    assert generated == sum(a + b for a, b in MADE.values()) == 20

    # the reused records are those a run of that budget alone makes (same seeds, same generation)
    for b in (20, 50):
        alone = evaluate([scripted_gguf, looping_gguf], problems, "mine", replace(PROTOCOL, reasoning_budget=b),
                         out_dir=tmp_path / f"alone{b}", **RUN)
        together = next(r for r in results if r.protocol.reasoning_budget == b)
        for one, other in zip(alone.models, together.models):
            assert one.new_samples == 4 and Path(one.samples_file).name == Path(other.samples_file).name
            assert _fields(read_samples(one.samples_file)) == _fields(read_samples(other.samples_file))

    # a re-run makes and copies nothing: every file is complete
    calls.clear()
    again = evaluate_budgets([scripted_gguf, looping_gguf], problems, "mine", BUDGETS, PROTOCOL,
                             out_dir=tmp_path / "eval", progress=lambda name, done, total: calls.append(name), **RUN)
    assert not calls and all(m.new_samples == 0 == m.reused_samples for r in again for m in r.models)


def test_cli_several_budgets(tmp_path, scripted_gguf):
    path = task_file(tmp_path, ["4"])
    args = ["eval", str(scripted_gguf), "--task-file", str(path), "-o", str(tmp_path / "eval"), "--ctx", "1024",
            "-ngl", "0", "--threads", "2", "--reasoning-budget", "20,5"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["protocol"]["reasoning_budget"] == [5, 20]
    assert [(m["reasoning_budget"], m["new_samples"], m["reused_samples"], m["budget_reached_pct"])
            for m in out["models"]] == [(5, 1, 0, 100), (20, 1, 0, 0)]  # 20 is the largest: nothing to reuse
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0 and "budget" in shown.stdout and "new / reused" in shown.stdout
    assert "0 / 0" in shown.stdout  # the re-run made nothing
    assert_clean_failure([*args[:-1], "5,x"], "--reasoning-budget takes thought tokens")
    assert_clean_failure([*args[:-1], "5,-1"], "--reasoning-budget must be ≥ 0")
