"""A run stopped midway — Ctrl-C in the middle of the ladder, or the process killed outright after conversion —
resumes without redoing finished files and ends with the same report as an uninterrupted run."""
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
from tests._fixtures.run_recipe import deterministic, full_run, report_rows, run_args, write_recipe

runner = CliRunner()
pytestmark = pytest.mark.slow
FAST = ("--skip", "bench,chat")  # speeds and the answer are not what these tests are about


def _mtimes(folder: Path) -> dict[str, int]:
    """Finished files only: a temporary `.NAME.partial-PID` is hidden."""
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _statuses(result) -> dict[str, str]:
    return {s["step"]: s["status"] for s in json.loads(result.stdout)["steps"]}


def test_ctrl_c_in_the_ladder_resumes(tmp_path, monkeypatch):
    import quantkit.quantize

    real = quantkit.quantize.quantize

    def interrupted_at_q8(src, dst, qtype, **kwargs):
        if qtype == "Q8_0":
            raise KeyboardInterrupt
        return real(src, dst, qtype, **kwargs)

    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(quantkit.quantize, "quantize", interrupted_at_q8)
    result = runner.invoke(app, run_args(recipe, out, *FAST))
    assert result.exit_code == 130 and "interrupted" in result.stderr
    models = _mtimes(out / "models")
    assert sorted(name.rsplit("-", 1)[1] for name in models) == ["F16.gguf", "Q4_0.gguf"]  # nothing half-written
    steps = _mtimes(out / "steps")
    assert sorted(steps) == ["convert.json", "quantize-Q4_0.json", "source.json"]

    monkeypatch.setattr(quantkit.quantize, "quantize", real)
    result = runner.invoke(app, run_args(recipe, out, *FAST, "--json"))
    assert result.exit_code == 0, result.output
    assert _statuses(result)["convert"] == "kept" and _statuses(result)["quantize"] == "done"
    after = _mtimes(out / "models")
    assert {k: after[k] for k in models} == models  # the base and Q4_0 were not made again
    assert {k: _mtimes(out / "steps")[k] for k in steps} == steps
    assert deterministic(report_rows(out)) == deterministic(report_rows(full_run()[0]))


def test_killed_process_resumes(tmp_path):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "quantkit", *run_args(recipe, out, *FAST)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not (out / "steps" / "convert.json").exists():  # the base GGUF is complete: the ladder starts
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no base GGUF after 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    models = _mtimes(out / "models")
    base = [name for name in models if name.endswith("-F16.gguf")]
    assert base

    result = runner.invoke(app, run_args(recipe, out, *FAST, "--json"))
    assert result.exit_code == 0, result.output
    assert _statuses(result)["convert"] == "kept"
    after = _mtimes(out / "models")
    assert after[base[0]] == models[base[0]]  # the base was not converted again
    for name, mtime in models.items():
        assert after[name] == mtime, f"{name} was made again"
    assert [p.name for p in (out / "models").iterdir() if p.name.startswith(".")] == []  # the killed run's temporary is gone
    assert deterministic(report_rows(out)) == deterministic(report_rows(full_run()[0]))
