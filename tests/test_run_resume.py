"""A run stopped midway — Ctrl-C in the middle of the ladder, or the process killed outright while a file is
half-written — resumes without redoing finished files and ends with the same files and report as an
uninterrupted run."""
from __future__ import annotations

import filecmp
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
    import quantkit.quantize.file

    real = quantkit.quantize.file.quantize

    def interrupted_at_q8(src, dst, qtype, **kwargs):
        if qtype == "Q8_0":
            raise KeyboardInterrupt
        return real(src, dst, qtype, **kwargs)

    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(quantkit.quantize.file, "quantize", interrupted_at_q8)
    result = runner.invoke(app, run_args(recipe, out, *FAST))
    assert result.exit_code == 130 and "interrupted" in result.stderr
    models = _mtimes(out / "models")
    assert sorted(name.rsplit("-", 1)[1] for name in models) == ["F16.gguf", "Q4_0.gguf"]  # nothing half-written
    steps = _mtimes(out / "steps")
    assert sorted(steps) == ["convert.json", "quantize-Q4_0.json", "source.json"]

    monkeypatch.setattr(quantkit.quantize.file, "quantize", real)
    result = runner.invoke(app, run_args(recipe, out, *FAST, "--json"))
    assert result.exit_code == 0, result.output
    assert _statuses(result)["convert"] == "kept" and _statuses(result)["quantize"] == "done"
    after = _mtimes(out / "models")
    assert {k: after[k] for k in models} == models  # the base and Q4_0 were not made again
    assert {k: _mtimes(out / "steps")[k] for k in steps} == steps
    assert deterministic(report_rows(out)) == deterministic(report_rows(full_run()[0]))


def _wait_for(proc: subprocess.Popen, found, what: str, seconds: float = 180) -> Path:
    deadline = time.monotonic() + seconds
    while (path := found()) is None:
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {seconds:.0f} s"
        time.sleep(0.005)
    return path


@pytest.mark.parametrize("qtype", ["F16", "Q4_0"])
def test_killed_while_writing_resumes(tmp_path, qtype):
    """SIGKILL while the base (F16) or the first rung (Q4_0) is half-written under its temporary name: nothing
    appears under the final name, and the next run removes the temporary, keeps what was finished, and ends with
    the same files, byte for byte, as an uninterrupted run."""
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    models_dir = out / "models"
    cmd = [sys.executable, "-m", "quantkit", *run_args(recipe, out, *FAST)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    pattern = f".*-{qtype}.gguf.partial-{proc.pid}"
    try:
        temporary = _wait_for(proc, lambda: next(models_dir.glob(pattern), None) if models_dir.is_dir() else None,
                              f"temporary {pattern}")
    finally:  # killed even when the wait above failed: no run left going
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    final = temporary.with_name(temporary.name[1:].rsplit(".partial-", 1)[0])
    assert temporary.exists(), "the kill did not land while the temporary was there"
    assert not final.exists(), f"{final.name} appeared before it was complete"
    models = _mtimes(models_dir)
    assert final.name not in models
    if qtype == "Q4_0":
        assert [n.rsplit("-", 1)[1] for n in models] == ["F16.gguf"]
        assert (out / "steps" / "convert.json").exists() and not (out / "steps" / "quantize-Q4_0.json").exists()

    result = runner.invoke(app, run_args(recipe, out, *FAST, "--json"))
    assert result.exit_code == 0, result.output
    assert _statuses(result)["convert"] == ("kept" if qtype == "Q4_0" else "done")
    assert not temporary.exists(), "the killed run's temporary was left behind"
    assert [p.name for p in models_dir.iterdir() if p.name.startswith(".")] == []
    after = _mtimes(models_dir)
    for name, mtime in models.items():
        assert after[name] == mtime, f"{name} was made again"
    reference = full_run()[0] / "models"
    assert sorted(after) == sorted(_mtimes(reference))
    for name in after:
        assert filecmp.cmp(models_dir / name, reference / name, shallow=False), f"{name} differs"
    assert deterministic(report_rows(out)) == deterministic(report_rows(full_run()[0]))
