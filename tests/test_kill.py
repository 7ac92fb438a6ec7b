"""Kill tests for the commands that write: SIGKILL at several moments of a write, then the same command again.
After each kill no file or folder is at its final name (it appears only when complete, by rename); the next run
removes what the killed one left (or reuses it) and ends with the same bytes as a run that was never interrupted.

One row per command; a command that lands later (quantize, imatrix) is one more row. convert, run and eval have
kill tests of their own next to their other tests (test_convert_cli.py, test_run_resume.py, test_eval_runner.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._fixtures.kill import kill_when, same_bytes, start, temporaries

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Kill:
    command: str
    args: Callable[[Path], list[str]]  # the command line, writing under the given folder
    output: str  # the final output, relative to that folder
    points: tuple[tuple[str, Callable[[Path, int], Path | None]], ...]  # (moment, what shows it: a temporary)
    reference: Callable[[], Path]  # the same output, made without interruption


def _export_temp(folder: Path, pid: int, inside: str, min_bytes: int = 1) -> Path | None:
    tmp = folder / f".out.partial-{pid}"
    f = tmp / inside
    return tmp if f.is_file() and f.stat().st_size >= min_bytes else None


def _smollm2_gguf() -> str:
    from reference.smollm2 import smollm2_gguf

    return str(smollm2_gguf())


def _smollm2_export() -> Path:
    from quantkit.convert.embedded import embedded_checkpoint

    return embedded_checkpoint()  # SmolLM2 exported once by export_gguf(dtype="f32"): what the CLI must write


KILLS = [
    Kill("export", lambda d: ["export", _smollm2_gguf(), str(d / "out"), "--dtype", "f32"], "out",
         (("writing model.safetensors", lambda d, pid: _export_temp(d, pid, "model.safetensors", 1 << 20)),
          ("writing the JSON files after the weights", lambda d, pid: _export_temp(d, pid, "config.json"))),
         _smollm2_export),
    # a command that lands later is one more row, e.g. (with `out` its output file and `reference` an
    # uninterrupted run's): Kill("quantize", lambda d: ["quantize", MODEL, "-t", "Q4_K_M", "-o", str(d / "q.gguf")],
    #   "q.gguf", (("writing the file", lambda d, pid: next(d.glob(f".q.gguf.partial-{pid}"), None)),), reference)
]


@pytest.mark.parametrize("case", KILLS, ids=[k.command for k in KILLS])
def test_killed_then_run_again(case: Kill, tmp_path):
    reference = case.reference()
    final = tmp_path / case.output
    left: list[Path] = []
    for moment, shows in case.points:
        proc = start(case.args(tmp_path), cwd=tmp_path)
        temporary = kill_when(proc, lambda: shows(tmp_path, proc.pid), moment)
        assert temporary.exists(), f"the kill at {moment} did not land while {temporary.name} was there"
        assert not final.exists(), f"{case.output} appeared before it was complete ({moment})"
        assert temporaries(tmp_path) == [temporary], "an earlier run's temporary was not removed"
        left.append(temporary)
    proc = start(case.args(tmp_path), cwd=tmp_path)
    assert proc.wait(timeout=300) == 0
    assert temporaries(tmp_path) == [], "a killed run's temporary was left behind"
    assert same_bytes(final, reference) == [], "the output differs from an uninterrupted run's"
