"""GGUFs made by llama.cpp's own converter (convert_hf_to_gguf.py from the llama-cpp-python sdist), cached: the
reference our converter is compared with byte for byte."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from reference.cache import cached_dir
from reference.sdist import llama_cpp_source


def reference_gguf(checkpoint: Path, key: str, outtype: str, vocab_only: bool = False) -> Path:
    """convert_hf_to_gguf.py's output for `checkpoint` at `outtype` (f32, f16, bf16, q8_0); `key` names the cache.
    `vocab_only`: only the tokenizer and the hyperparameters (its --vocab-only)."""

    def build(tmp: Path) -> None:
        tree = llama_cpp_source()
        env = {**os.environ, "PYTHONPATH": str(tree / "gguf-py"), "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(
            [sys.executable, str(tree / "convert_hf_to_gguf.py"), str(checkpoint), "--outtype", outtype,
             "--outfile", str(tmp / "model.gguf"), *(["--vocab-only"] if vocab_only else [])],
            env=env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{result.stderr[-3000:]}")

    return cached_dir(f"reference-{key}-{outtype}{'-vocab' if vocab_only else ''}", build) / "model.gguf"
