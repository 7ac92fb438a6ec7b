"""The llama-cpp-python 0.3.36 sdist: llama.cpp's vocab files, chat templates and reference tools (read, never
copied into the package)."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from reference.cache import cached_dir, test_cache

VERSION = "0.3.36"


def _download() -> Path:
    folder = test_cache("downloads")
    found = list(folder.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--dest", str(folder), f"llama-cpp-python=={VERSION}"],
            check=True,
        )
        found = list(folder.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    return found[0]


def llama_cpp_source() -> Path:
    """The vendored llama.cpp tree (vendor/llama.cpp) of the sdist, extracted once."""

    def build(tmp: Path) -> None:
        with tarfile.open(_download()) as tar:
            prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(tmp, members=[m for m in members if m.name], filter="data")

    return cached_dir(f"llama.cpp-{VERSION}", build)


def vocab_gguf(name: str) -> Path:
    """e.g. vocab_gguf("qwen2") → models/ggml-vocab-qwen2.gguf"""
    return llama_cpp_source() / "models" / f"ggml-vocab-{name}.gguf"


def chat_template(name: str) -> str:
    return (llama_cpp_source() / "models" / "templates" / f"{name}.jinja").read_text()
