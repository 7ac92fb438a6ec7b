"""Start-up cost: every command, even `--help`, loads the CLI module of every other command, so none of them may
import llama.cpp or pandas at the top (each costs 0.1–0.3 s of a 2-second conversion); and the public names of
`quantkit` still resolve, lazily."""
from __future__ import annotations

import subprocess
import sys

import quantkit


def test_cli_starts_without_llama_cpp_or_pandas():
    code = "import sys, quantkit.cli.app; print(sorted(m for m in ('llama_cpp', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names_resolve():
    for name in quantkit.__all__:
        assert getattr(quantkit, name) is not None, name
    assert quantkit.estimate_memory.__module__ == "quantkit.memory"
