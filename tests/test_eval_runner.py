"""`quantkit eval` end to end on the scripted R1 model, whose every answer is "\\boxed{4}" after a known thought:
pass@1 is known exactly from the gold answers, the records hold the thought, answer, counts and seeds, a budget
inside the thought leaves no answer, a re-run resumes (also after SIGKILL) without doing a sample twice, a SIGKILLed
eval leaves no process behind, and bad inputs are one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.eval import read_samples
from quantkit.eval.runner import Protocol, eval_table, evaluate
from quantkit.eval.tasks import read_task_file
from tests._fixtures import scripted
from tests._fixtures.kill import descendants, kill_when, start, still_alive
from tests.test_bad_inputs import assert_clean_failure

runner = CliRunner()
pytestmark = pytest.mark.slow


def task_file(tmp_path: Path, golds: list[str]) -> Path:
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": g}) + "\n"
                            for i, g in enumerate(golds)))
    return path


def test_pass_at_1_thought_and_records(tmp_path, scripted_gguf):
    problems = read_task_file(task_file(tmp_path, ["4", "4", "5", "\\frac{8}{2}"]))
    result = evaluate([scripted_gguf], problems, "mine", Protocol(samples=2, seed=7), out_dir=tmp_path / "eval",
                      parallel=2, n_ctx=1024, n_gpu_layers=0, threads=2)
    (row,) = eval_table(result)
    assert row["pass_at_1"] == 0.75 and row["samples"] == 8 and row["new_samples"] == 8
    assert row["verdicts"] == {"correct": 6, "wrong": 2}
    assert row["cut_off_pct"] == 0 and row["thought_mean_correct"] == scripted.REASONING_TOKENS
    samples = read_samples(row["samples_file"])
    assert len(samples) == 8 and len({s.key for s in samples}) == 8
    for s in samples:
        assert s.reasoning == scripted.THOUGHT and s.answer == scripted.ANSWER and s.extracted == "4"
        assert (s.reasoning_tokens, s.answer_tokens, s.finish_reason) == (scripted.REASONING_TOKENS,
                                                                          scripted.ANSWER_TOKENS, "stop")
        assert s.verdict == ("wrong" if s.gold == "5" else "correct")
    assert len({s.seed for s in samples}) == 8  # every sample its own recorded seed
    again = evaluate([scripted_gguf], problems, "mine", Protocol(samples=2, seed=7), out_dir=tmp_path / "eval",
                     parallel=2, n_ctx=1024, n_gpu_layers=0, threads=2)
    assert eval_table(again)[0]["new_samples"] == 0 and eval_table(again)[0]["pass_at_1"] == 0.75


def test_a_budget_inside_the_thought_leaves_no_answer(tmp_path, scripted_gguf):
    problems = read_task_file(task_file(tmp_path, ["4", "4"]))
    result = evaluate([scripted_gguf], problems, "mine", Protocol(max_tokens=5), out_dir=tmp_path / "eval",
                      parallel=2, n_ctx=1024, n_gpu_layers=0, threads=2)
    (row,) = eval_table(result)
    assert row["pass_at_1"] == 0 and row["cut_off_pct"] == 100 and row["verdicts"] == {"no_answer": 2}
    assert all(s.reasoning == "".join(scripted.THOUGHT_PIECES[:5]) for s in read_samples(row["samples_file"]))


def test_ladder_table_and_cli_json(tmp_path, scripted_gguf, scripted_bare_gguf):
    path = task_file(tmp_path, ["4", "5", "4"])
    result = runner.invoke(app, ["eval", str(scripted_gguf), str(scripted_bare_gguf), "--task-file", str(path),
                                 "-o", str(tmp_path / "eval"), "--ctx", "1024", "-ngl", "0", "--threads", "2",
                                 "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    base, rung = out["models"]
    assert out["problems"] == 3 and base["pass_at_1"] == rung["pass_at_1"] == pytest.approx(2 / 3)
    assert base["delta"] is None and rung["delta"] == 0 and rung["p_value"] == 1.0
    shown = runner.invoke(app, ["eval", str(scripted_gguf), "--task-file", str(path), "-o", str(tmp_path / "eval"),
                                "--ctx", "1024", "-ngl", "0", "--threads", "2"])
    assert shown.exit_code == 0 and "66.7" in shown.stdout and "base" in shown.stdout


def test_sigkill_midway_then_resume(tmp_path, scripted_gguf):
    path = task_file(tmp_path, ["4"] * 12)
    args = [sys.executable, "-m", "quantkit", "eval", str(scripted_gguf), "--task-file", str(path), "-o",
            str(tmp_path / "eval"), "--ctx", "1024", "-ngl", "0", "--threads", "2", "--parallel", "1", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = lambda: list((tmp_path / "eval").glob("*.jsonl"))  # noqa: E731
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            files = records()
            if files and files[0].read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.05)
    finally:  # killed whatever happened above: no eval left running
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = len(read_samples(records()[0]))
    assert 3 <= done_before < 12
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)["models"][0]
    samples = read_samples(records()[0])
    assert len(samples) == 12 == len({s.key for s in samples})  # nothing done twice
    assert row["new_samples"] == 12 - done_before and row["pass_at_1"] == 1.0


def test_a_sigkilled_eval_leaves_no_process_behind(tmp_path, scripted_gguf):
    """Killed once its grading pool is up (a sample is graded before it is recorded), none of the processes under
    the eval (the pool's workers, multiprocessing's helpers) is alive a few seconds later."""
    path = task_file(tmp_path, ["4"] * 12)
    proc = start(["eval", str(scripted_gguf), "--task-file", str(path), "-o", str(tmp_path / "eval"), "--ctx", "1024",
                  "-ngl", "0", "--threads", "2", "--parallel", "1", "--json"])

    def pool_up() -> dict[int, int] | None:
        files = list((tmp_path / "eval").glob("*.jsonl"))
        under = descendants(proc.pid) if files and files[0].read_bytes().count(b"\n") >= 1 else {}
        return under if len(under) >= 2 else None  # the grader's two workers, at least

    under = kill_when(proc, pool_up, "a graded sample and the grading pool", seconds=300)
    deadline = time.monotonic() + 15
    while (alive := still_alive(under)) and time.monotonic() < deadline:
        time.sleep(0.1)
    names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200] for pid in alive}
    for pid in alive:  # leave nothing behind for the next test either
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"still alive 15 s after the eval was killed: {names}"


def test_bad_inputs(tmp_path, scripted_gguf):
    assert_clean_failure(["eval", str(scripted_gguf), "--task", "nope"], "unknown task")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    assert_clean_failure(["eval", str(scripted_gguf), "--task-file", str(bad)], "problem")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"problem": "1+1?", "answer": ""}) + "\n")
    assert_clean_failure(["eval", str(scripted_gguf), "--task-file", str(empty)], "answer")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert_clean_failure(["eval", str(notes), "--task", "arith", "-o", str(tmp_path / "o")], "not a GGUF")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    assert_clean_failure(["eval", "some-model", "--endpoint", "http://127.0.0.1:9/v1", "--task", "arith",
                          "--limit", "1", "-o", str(tmp_path / "e")], "cannot reach")


N_CLOSING = 16  # the default closing text's tokens (tests/_fixtures/scripted.py: closing_tokens())


def test_reasoning_budget_records_and_a_file_of_its_own(tmp_path, scripted_gguf):
    from quantkit.engine.thinking import BUDGET_MESSAGE

    problems = read_task_file(task_file(tmp_path, ["4", "5"]))
    plain = Protocol(seed=3)
    result = evaluate([scripted_gguf], problems, "mine", Protocol(seed=3, reasoning_budget=5),
                      out_dir=tmp_path / "eval", parallel=2, n_ctx=1024, n_gpu_layers=0, threads=2)
    (row,) = eval_table(result)
    assert row["pass_at_1"] == 0.5 and row["budget_reached_pct"] == 100 and row["looped_pct"] == 0
    for s in read_samples(row["samples_file"]):
        assert (s.reasoning, s.answer) == ("".join(scripted.THOUGHT_PIECES[:5]) + BUDGET_MESSAGE, scripted.ANSWER)
        assert (s.reasoning_tokens, s.answer_tokens, s.forced_tokens) == (5 + N_CLOSING - 1, 9, N_CLOSING)
        assert s.budget_reached and not s.looped
    # the budget is in the file's name; the default protocol's name is what it was before budgets existed
    assert Protocol(seed=3, reasoning_budget=5).key("mine") != plain.key("mine")
    assert plain.key("mine") == Protocol(seed=3, loop_guard="off").key("mine")


def test_budget_zero_answers_without_a_thought(tmp_path, scripted_gguf):
    problems = read_task_file(task_file(tmp_path, ["4"]))
    result = evaluate([scripted_gguf], problems, "mine", Protocol(reasoning_budget=0), out_dir=tmp_path / "eval",
                      parallel=1, n_ctx=1024, n_gpu_layers=0, threads=2)
    (s,) = read_samples(eval_table(result)[0]["samples_file"])
    assert (s.reasoning, s.answer, s.reasoning_tokens, s.answer_tokens, s.verdict) == ("", scripted.ANSWER, 0, 8,
                                                                                      "correct")


def test_loop_guard_off_by_default_and_the_looped_share(tmp_path, scripted_loop_gguf):
    problems = read_task_file(task_file(tmp_path, ["4", "4"]))
    unaided = evaluate([scripted_loop_gguf], problems, "mine", Protocol(max_tokens=80), out_dir=tmp_path / "a",
                       parallel=2, n_ctx=1024, n_gpu_layers=0, threads=2)
    (row,) = eval_table(unaided)
    assert row["looped_pct"] == 0 and row["cut_off_pct"] == 100 and row["pass_at_1"] == 0
    guarded = evaluate([scripted_loop_gguf], problems, "mine", Protocol(max_tokens=80, loop_guard="end"),
                       out_dir=tmp_path / "b", parallel=2, n_ctx=1024, n_gpu_layers=0, threads=2)
    (row,) = eval_table(guarded)
    assert row["looped_pct"] == 100 and row["pass_at_1"] == 1.0
    for s in read_samples(row["samples_file"]):
        assert s.looped and s.reasoning_tokens == scripted.LOOP_FIRES_AT + N_CLOSING - 1 and s.answer == scripted.ANSWER


def test_cli_reasoning_budget(tmp_path, scripted_gguf):
    path = task_file(tmp_path, ["4"])
    args = ["eval", str(scripted_gguf), "--task-file", str(path), "-o", str(tmp_path / "eval"), "--ctx", "1024",
            "-ngl", "0", "--threads", "2"]
    result = runner.invoke(app, [*args, "--reasoning-budget", "5", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["protocol"]["reasoning_budget"] == 5 and out["models"][0]["budget_reached_pct"] == 100
    shown = runner.invoke(app, [*args, "--reasoning-budget", "5"])
    assert "reasoning budget 5, loop guard off" in shown.stdout and "looped %" in shown.stdout
    assert_clean_failure([*args, "--reasoning-budget", "-3"], "--reasoning-budget must be ≥ 0")
