"""The seeded mutation fuzzer (tests/_fixtures/fuzz.py) over the GGUF header parser and the safetensors reader:
10,000 cases each by default (QUANTKIT_FUZZ_CASES=200000 for a longer run, QUANTKIT_FUZZ_SEED for other cases).
Each case must end in success or a typed quantkit error — no other exception — and the fuzzing process (its
address space capped at 4 GiB) under 300 MB of peak memory, within the run's timeout (the guard against a case
that hangs). `pytest -s` prints the outcome counts by error type and the slowest case's time, which is not
asserted: a time depends on the machine's load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # its seeds are SmolLM2 and the tiny checkpoints

CASES = int(os.environ.get("QUANTKIT_FUZZ_CASES", "10000"))
SEED = int(os.environ.get("QUANTKIT_FUZZ_SEED", "0"))


@pytest.mark.parametrize("target", ["gguf", "safetensors"])
def test_fuzz(target):
    from tests._fixtures import fuzz

    # the seed files are built (and cached) here first, so that the fuzzing process's peak memory is the
    # parser's, not that of building a checkpoint with torch
    (fuzz.gguf_seeds if target == "gguf" else fuzz.safetensors_seeds)()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "tests._fixtures.fuzz", target, "--cases", str(CASES), "--seed",
                           str(SEED)], cwd=root, capture_output=True, text=True, timeout=120 + CASES * 0.02)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    print(f"\nfuzz {target}: {summary['cases']} cases (seed {SEED}) in {summary['seconds']} s, outcomes "
          f"{summary['outcomes']}, slowest case {summary['slowest_case_s']} s, peak RSS {summary['peak_rss_mib']} MiB; "
          f"cases by seed {({k: v['cases'] for k, v in summary['seeds'].items()})}")
    assert summary["cases"] == CASES
    assert summary["n_findings"] == 0, json.dumps(summary["findings"][:10], indent=1)
    assert summary["peak_rss_mib"] < 300
    assert len(summary["outcomes"]) >= 2  # some cases are refused and some accepted: the mutations bite
