"""llama.cpp's own tools (llama-perplexity, llama-bench, llama-quantize …), built once from the llama.cpp tree
vendored in the llama-cpp-python 0.3.36 sdist, in a scratch folder under ~/.cache/quantkit-bench. The reference
side of the benchmark scripts; never imported by the package."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_CACHE = Path.home() / ".cache" / "quantkit-bench"
BUILD = BENCH_CACHE / "llama.cpp-0.3.36-build"


def llama_cpp_source() -> Path:
    from reference.sdist import llama_cpp_source as source

    return source()


def build_tool(target: str, jobs: int = os.cpu_count() or 2) -> Path:
    """The binary of llama.cpp target `target` (e.g. "llama-bench", "llama-server"), built on first use (Release,
    native)."""
    binary = BUILD / "bin" / target
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    with open(BENCH_CACHE / "build.lock", "w") as lock:  # two scripts may build at once: one cmake tree at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        # One tree for every tool: the server target (tools/server) exists only with LLAMA_BUILD_SERVER=ON, and
        # re-configuring an existing tree with it adds targets without rebuilding the others.
        configure = [
            "cmake", "-S", str(llama_cpp_source()), "-B", str(BUILD), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF",
        ]
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(BUILD), "--target", target, "-j", str(jobs)], check=True)
    return binary
