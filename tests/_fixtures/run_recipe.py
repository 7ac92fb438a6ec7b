"""A reduced SmolLM2 recipe (two rungs, a few chunks, a tiny bench and answer) and one full run of it, shared by
the `quantkit run` tests: made once per test session in a temporary folder."""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from typer.testing import CliRunner

TINY_RECIPE = """\
description = "SmolLM2, reduced for tests"
source = "embedded:smollm2"
outtype = "F16"
ladder = ["Q4_0", "Q8_0"]

[perplexity]
dataset = "python-docs"
ctx = 128
chunks = 4

[bench]
n_prompt = 16
n_gen = 4
repetitions = 1

[memory]
ctx = 2048

[chat]
prompt = "Say hello."
max_tokens = 4
ctx = 256

[eval]
task = "arith"
limit = 3
max_tokens = 12
ctx = 512
parallel = 2
"""
THREADS = "2"


def write_recipe(folder: Path, text: str = TINY_RECIPE, name: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def run_args(recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(recipe), "--out", str(out), "--threads", THREADS, "--n-gpu-layers", "0", *extra]


@functools.cache
def full_run() -> tuple[Path, dict]:
    """(output folder, `run --json` summary) of one uninterrupted run of the tiny recipe."""
    from quantkit.cli.app import app

    folder = Path(tempfile.mkdtemp(prefix="quantkit-run-"))
    recipe = write_recipe(folder)
    out = folder / "out"
    result = CliRunner().invoke(app, run_args(recipe, out, "--json"))
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def report_rows(out: Path) -> list[dict]:
    return json.loads((out / "report.json").read_text())["rows"]


DETERMINISTIC = ("type", "file", "size_bytes", "bpw", "ppl", "ppl_err", "delta_ppl_pct", "mean_kld", "same_top_pct",
                 "vram_bytes", "fits_gib", "pareto")


def deterministic(rows: list[dict]) -> list[dict]:
    """The columns that do not depend on timing (speeds do)."""
    return [{k: row.get(k) for k in DETERMINISTIC} for row in rows]
