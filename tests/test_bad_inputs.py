"""Nothing a user hands quantkit makes it crash, hang, eat memory or leave a broken file: every row of the corpus
(tests/_fixtures/bad_inputs.py) runs as a real quantkit process and must end with its exit code, exactly one
line on stderr that says what is wrong and how to fix it, no traceback, nothing on stdout, the folder it worked
in exactly as before (names, sizes and times of every file), and under 300 MB of peak resident memory. A row
still running after 30 s fails (a hang); how long each took is printed in the run's summary, not asserted.

Each row runs in a child forked from a warm driver process (tests/_fixtures/corpus_driver.py): the speed of an
in-process run, the isolation and the honest peak RSS of a process of its own.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from tests._fixtures.bad_inputs import CORPUS, README_END, README_START, NeedsRoot, Row, Work, counts, good_inputs
from tests._fixtures.bad_inputs import readme_section
from tests._fixtures.corpus_driver import Driver

runner = CliRunner()

MAX_RSS_MIB = 300.0
_LINE = re.compile(r"^error: .+ \(.+\)$")  # the message, then the hint in parentheses
_measured: dict[str, dict] = {}


def assert_clean_failure(args: list[str], expect: str, code: int = 1) -> str:
    """For tests elsewhere that run the CLI in-process: exit code, one `error:` line, no traceback, no stdout."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert expect.lower() in err.lower(), err
    assert result.stdout == ""
    return err


@pytest.fixture(scope="module")
def driver():
    d = Driver(env={"HF_HUB_OFFLINE": "1", "QUANTKIT_DEBUG": "", "NO_COLOR": "1"})
    start = time.perf_counter()
    yield d
    d.close()
    _report(time.perf_counter() - start)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`: a file's size and time, a folder's name (a temporary made and removed
    inside a folder changes the folder's time, not what it holds)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
            for p in sorted(folder.rglob("*"))}


def _param(row: Row):
    # the GGUF rows of inspect need no model, nor llama.cpp: they stay in the quick subset (`-m "not slow"`)
    return pytest.param(row, id=row.id, marks=() if row.command == "inspect" else pytest.mark.slow)


@pytest.mark.parametrize("row", [_param(r) for r in CORPUS])
def test_refused_cleanly(row: Row, driver, tmp_path):
    work = Work(tmp_path / "work")
    work.dir.mkdir()
    try:
        try:
            args = row.build(work)
        except NeedsRoot as e:
            pytest.skip(str(e))
        before = _snapshot(work.dir)
        result = driver.run(args, cwd=work.dir, timeout=30)
        after = _snapshot(work.dir)
    finally:
        work.close()
    _measured[row.id] = result
    err = result["stderr"]
    assert not result["timed_out"], f"still running after 30 s: {err[-2000:]}"
    assert result["signal"] is None, f"killed by signal {result['signal']}: {err[-2000:]}"
    assert "Traceback" not in err, err
    assert result["code"] == row.code, (result["code"], err)
    assert len(err.splitlines()) == 1, err
    line = err.strip()
    assert _LINE.match(line), line
    assert not line.startswith("error: internal error"), line  # a bug caught by the last resort, not a refusal
    assert row.words.lower() in line.lower(), line
    assert result["stdout"] == ""
    kept = {k: v for k, v in after.items() if k not in before and any(p == k or p.startswith(k + "/")
                                                                       for p in row.keeps)}
    assert sorted(k for k in kept if k in row.keeps) == sorted(row.keeps), "a finished step was not kept"
    assert {k: v for k, v in after.items() if k not in kept} == before, "the output folder changed"
    assert result["maxrss_mib"] < MAX_RSS_MIB, result["maxrss_mib"]


def _report(seconds: float) -> None:
    if not _measured:
        return
    rss = max(r["maxrss_mib"] for r in _measured.values())
    slowest = max(_measured.items(), key=lambda kv: kv[1]["seconds"])
    print(f"\ncorpus: {len(_measured)} of {len(CORPUS)} rows run in {seconds:.1f} s; rows by command: "
          + ", ".join(f"{c} {n}" for c, n in sorted(counts().items()))
          + f"; peak RSS {rss:.0f} MiB; slowest {slowest[1]['seconds']:.2f} s ({slowest[0]})")


def test_corpus_covers_every_command():
    commands = {c.name for c in app.registered_commands}
    missing = commands - set(counts())
    assert not missing, f"no corpus row runs {sorted(missing)}: add rows to tests/_fixtures/bad_inputs.py (one line each)"
    assert set(counts()) <= commands, set(counts()) - commands
    assert len(CORPUS) >= 60
    assert len({r.id for r in CORPUS}) == len(CORPUS)


def test_readme_shows_the_corpus():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start, end = readme.find(README_START), readme.find(README_END)
    assert start >= 0 and end > start, "README.md lacks the generated section"
    assert readme[start:end + len(README_END)] == readme_section(), (
        "README.md's refusals table is out of date: paste `python -m tests._fixtures.bad_inputs` in its place")


@pytest.mark.slow
def test_good_inputs_are_good(tmp_path):
    """The inputs the rows spoil are themselves accepted, so a row fails only for what it spoiled."""
    from quantkit.convert import convert
    from quantkit.gguf.reader import read_header
    from quantkit.job.recipes import load_recipe

    good = good_inputs()
    assert read_header(good.model).tensors
    made = convert(good.checkpoint, tmp_path / "out", outtype="F16")
    assert read_header(made.base.path).tensors
    recipe = Work(tmp_path).recipe()
    assert load_recipe(recipe).ladder == ("Q8_0",)


def test_usage_errors_are_one_line():
    result = runner.invoke(app, ["inspect"], prog_name="quantkit")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: Missing argument 'path'. (see `quantkit inspect --help`)"


def test_debug_shows_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTKIT_DEBUG", "1")
    (tmp_path / "bad.gguf").write_bytes(b"")
    result = runner.invoke(app, ["inspect", str(tmp_path / "bad.gguf")])
    assert result.exit_code != 0
    assert result.exception is not None and type(result.exception).__name__ == "NotGGUFError"
