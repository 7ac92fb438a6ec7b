"""llama.cpp's log goes to Python logging, never to the terminal: not at load, not after a quantize (which once
handed the log back to llama-cpp-python's printing callback, so the next load wrote ~60 lines to stderr), and
`capture()` collects what libllama says while a block runs."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
from pathlib import Path
from quantkit.quantize.file import quantize
from quantkit.runtime import capture, load_vocabulary
src = Path(sys.argv[1])
quantize(src, Path(sys.argv[2]), "Q4_K_M", dry_run=True, allow_requantize=True)
with load_vocabulary(src) as vocab:
    assert vocab.n_vocab > 0
with capture() as lines:
    load_vocabulary(src).close()
print(sum("llama_model_loader" in line for line in lines))
"""


def test_nothing_reaches_stderr_and_capture_sees_the_log(smollm2_gguf, tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(smollm2_gguf), str(tmp_path / "dry.gguf")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert int(out.stdout.strip()) > 10  # the loader's lines were captured, not printed
    assert not (tmp_path / "dry.gguf").exists()
