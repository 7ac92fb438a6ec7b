"""What a second `quantkit run` redoes and what it keeps: a changed setting redoes exactly the steps that read it,
a rebuilt base redoes the rungs and every measurement, `--force` redoes everything, a killed run's temporaries
are removed, and a finished file whose record was lost is kept.

One run of a one-rung recipe is made per module (`baseline`); each test works on its own copy of it. The job
runs with a relative `--out` from inside the copy, so that the records' paths hold in the copy too; the GGUFs are
hard links (every write goes to a temporary that is renamed, so a rewritten file is a new inode and the
baseline's stays as it was)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from tests._fixtures.run_recipe import THREADS, TINY_RECIPE, report_rows

runner = CliRunner()
pytestmark = pytest.mark.slow

RECIPE = TINY_RECIPE.replace('ladder = ["Q4_0", "Q8_0"]', 'ladder = ["Q4_0"]')
STEPS = ("source", "convert", "quantize", "perplexity", "bench", "memory", "chat", "eval", "report")
OUT = Path("out")


def _write_recipe(text: str = RECIPE) -> Path:
    path = Path("tiny.toml")
    path.write_text(text)
    return path


def _run(*extra: str, recipe: Path = Path("tiny.toml")) -> dict:
    """`quantkit run` in the current folder; the statuses of its steps, with the summary under "summary"."""
    result = runner.invoke(app, ["run", str(recipe), "--out", str(OUT), "--threads", THREADS, "--n-gpu-layers", "0",
                                 "--json", *extra])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    return {"summary": summary, **{s["step"]: s["status"] for s in summary["steps"]}}


def _statuses(result: dict) -> dict[str, str]:
    return {s: result[s] for s in STEPS}


def _kept_but(*redone: str) -> dict[str, str]:
    """The statuses of a run that redoes `redone` and keeps the rest (the report is always written again)."""
    return {s: "done" if s in redone or s == "report" else "kept" for s in STEPS}


def _record(step: str) -> dict:
    return json.loads((OUT / "steps" / f"{step}.json").read_text())["result"]


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Finished files (a temporary `.NAME.partial-PID` is hidden) → (inode, mtime)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")}


def _base() -> Path:
    [base] = (OUT / "models").glob("*-F16.gguf")
    return base


def _rung(qtype: str) -> Path:
    [path] = (OUT / "models").glob(f"*-{qtype}.gguf")
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("baseline")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        _write_recipe()
        result = _run()
        assert _statuses(result) == {s: "done" for s in STEPS}
    finally:
        os.chdir(cwd)
    return folder


@pytest.fixture
def case(baseline, tmp_path, monkeypatch) -> Path:
    """A copy of the baseline to change, as the current folder."""
    def link_models(src: str, dst: str) -> None:
        if src.endswith(".gguf"):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    folder = tmp_path / "case"
    shutil.copytree(baseline, folder, copy_function=link_models)
    monkeypatch.chdir(folder)
    return folder


def test_an_unchanged_copy_keeps_everything(case):
    """The premise of every other test here: the copy is a finished job."""
    before = _files(OUT / "models")
    assert _statuses(_run()) == _kept_but()
    assert _files(OUT / "models") == before


# (setting changed in the recipe, its new text, steps that must be redone, what the redone step now holds);
# one or two settings per step: each step's record compares all its inputs in one dict
SETTINGS = {
    "perplexity chunks": ("chunks = 4", "chunks = 3", ("perplexity",),
                          lambda: [r["n_chunks"] for r in _record("perplexity")["results"]] == [3, 3]),
    "perplexity ctx": ("ctx = 128", "ctx = 64", ("perplexity",),
                       lambda: [r["n_ctx"] for r in _record("perplexity")["results"]] == [64, 64]),
    "bench n_gen": ("n_gen = 4", "n_gen = 3", ("bench",),
                    lambda: all([t["test"] for t in _record(f"bench-{q}")] == ["pp16", "tg3"] for q in ("F16", "Q4_0"))),
    "memory ctx": ("ctx = 2048", "ctx = 1024", ("memory",),
                   lambda: all(_record(f"memory-{q}")["estimate"]["n_ctx"] == 1024 for q in ("F16", "Q4_0"))),
    "chat prompt": ('prompt = "Say hello."', 'prompt = "Say goodbye."', ("chat",),
                    lambda: _record("chat")["prompt"] == "Say goodbye."),
    "chat max_tokens": ("max_tokens = 4", "max_tokens = 2", ("chat",),
                        lambda: _record("chat")["reasoning_tokens"] + _record("chat")["answer_tokens"] <= 2),
    "eval limit": ("limit = 3", "limit = 2", ("eval",), lambda: _record("eval")["problems"] == 2),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_a_changed_setting_redoes_its_step_only(case, name):
    old, new, redone, holds_new_value = SETTINGS[name]
    assert RECIPE.count(old) == 1
    _write_recipe(RECIPE.replace(old, new))
    models = _files(OUT / "models")
    assert _statuses(_run()) == _kept_but(*redone)
    assert holds_new_value()
    assert _files(OUT / "models") == models


def test_a_longer_ladder_makes_the_new_rung_and_measures_it(case):
    q4 = _files(OUT / "models")[_rung("Q4_0").name]
    _write_recipe(RECIPE.replace('ladder = ["Q4_0"]', 'ladder = ["Q4_0", "Q8_0"]'))
    result = _run()
    # Q8_0 is closer to the base than Q4_0: the answer now comes from it
    assert _statuses(result) == _kept_but("quantize", "perplexity", "bench", "memory", "chat", "eval")
    assert _files(OUT / "models")[_rung("Q4_0").name] == q4  # the old rung is kept
    rows = report_rows(OUT)
    assert [r["type"] for r in rows] == ["F16", "Q4_0", "Q8_0"]
    for row in rows:
        assert row["ppl"] is not None and row["mean_kld"] is not None and row["vram_bytes"] > 0, row
        assert row["pp_tps"] > 0, row
    assert [Path(r["path"]).name for r in _record("perplexity")["results"]] == [r["file"] for r in rows]
    assert _record("chat")["type"] == "Q8_0"

    # and back: the perplexity of the shorter ladder is measured on its files only
    _write_recipe(RECIPE)
    assert _statuses(_run()) == _kept_but("perplexity", "chat", "eval")
    assert [Path(r["path"]).name for r in _record("perplexity")["results"]] == [r["file"] for r in report_rows(OUT)]
    assert _record("chat")["type"] == "Q4_0"


def _rewrite_a_tensor(path: Path, name: str = "blk.0.ffn_down.weight") -> None:
    """Another base of the same size: flip the sign of one F16 tensor's first 4096 values, as a rebuild from
    another checkpoint revision would leave the file."""
    from gguf import GGUFReader

    tensor = next(t for t in GGUFReader(path).tensors if t.name == name)
    offset, n = int(tensor.data_offset), min(4096, int(tensor.n_elements))
    tmp = path.with_name(path.name + ".new")
    shutil.copyfile(path, tmp)
    with open(tmp, "r+b") as f:
        f.seek(offset)
        halves = np.frombuffer(f.read(2 * n), dtype=np.uint16) ^ np.uint16(0x8000)
        f.seek(offset)
        f.write(halves.tobytes())
    os.replace(tmp, path)


def test_a_rebuilt_base_redoes_the_rungs_and_every_measurement(case):
    base, q4 = _base(), _rung("Q4_0")
    size, q4_bytes = base.stat().st_size, q4.read_bytes()
    ppl_before = [r["ppl"] for r in _record("perplexity")["results"]]
    _rewrite_a_tensor(base)
    assert base.stat().st_size == size
    result = _run()
    assert _statuses(result) == _kept_but("quantize", "perplexity", "bench", "memory", "chat", "eval")
    assert _rung("Q4_0").read_bytes() != q4_bytes  # made again from the new base
    ppl_after = [r["ppl"] for r in _record("perplexity")["results"]]
    assert ppl_after[0] != ppl_before[0] and ppl_after[1] != ppl_before[1]
    # and what was made is what a fresh job on the new base makes: measured again, nothing stale left
    assert _statuses(_run()) == _kept_but()


def test_force_redoes_everything(case):
    models = _files(OUT / "models")
    records = _files(OUT / "steps")
    base_bytes = _base().read_bytes()
    assert _statuses(_run("--force")) == {s: "done" for s in STEPS}
    after = _files(OUT / "models")
    assert set(after) == set(models)
    for name, (inode, mtime) in after.items():
        assert (inode, mtime) != models[name], f"{name} was not made again"
    steps = _files(OUT / "steps")
    for name in records:
        assert steps[name] != records[name], f"{name} was not written again"
    assert _base().read_bytes() == base_bytes  # the converter is deterministic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_temporaries_are_removed(case):
    dead = _dead_pid()
    stale = [OUT / "models" / f".{_rung('Q4_0').name}.partial-{dead}", OUT / "steps" / f".bench-F16.json.partial-{dead}",
             OUT / "models" / f".{_base().name}.partial-{dead}"]
    live = OUT / "models" / f".other.gguf.partial-{os.getpid()}"  # another run, still writing: not ours to remove
    for path in (*stale, live):
        path.write_bytes(b"GGUF" + bytes(1000))
    models = _files(OUT / "models")
    assert _statuses(_run("--only", "report")) == {s: "done" if s == "report" else "skipped" for s in STEPS}
    for path in stale:
        assert not path.exists(), f"{path.name} was left behind"
    assert live.exists()
    assert _files(OUT / "models") == models


def test_a_finished_file_whose_record_was_lost_is_kept(case):
    """Killed after the rename into place and before the record was written: the file is complete and kept."""
    models = _files(OUT / "models")
    for step in ("convert", "quantize-Q4_0"):
        (OUT / "steps" / f"{step}.json").unlink()
    result = _run()
    assert result["quantize"] == "kept"
    assert {s: result[s] for s in ("perplexity", "bench", "memory", "chat")} == dict.fromkeys(
        ("perplexity", "bench", "memory", "chat"), "kept")
    assert _files(OUT / "models") == models  # neither the base nor the rung was made again
    assert _record("quantize-Q4_0")["path"] == str(_rung("Q4_0"))
    assert _record("convert")["base"]["path"] == str(_base())
