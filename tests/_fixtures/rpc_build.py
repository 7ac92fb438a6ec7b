"""An RPC-capable llama.cpp (`GGML_RPC=ON`, CPU backend, shared libraries) built once from the sdist's vendored
tree: its libllama for llama-cpp-python (`LLAMA_CPP_LIB_PATH`) and its `ggml-rpc-server`. The pip-installed libraries
are built without RPC, and pip's wheel cache does not key on CMAKE_ARGS, so the RPC build lives apart."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from reference.cache import cached_dir, test_cache
from reference.sdist import VERSION, llama_cpp_source

# what llama-cpp-python's ctypes bindings load, and the server the remote hosts run
LIBRARIES = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so", "libggml-rpc.so")


def rpc_build() -> Path:
    """A folder with the RPC-capable shared libraries and `ggml-rpc-server`, built on first use (several minutes)."""

    def build(out: Path) -> None:
        tree = test_cache(f"llama.cpp-{VERSION}-rpc-tree")  # kept: an interrupted build resumes where it stopped
        configure = [
            "cmake", "-S", str(llama_cpp_source()), "-B", str(tree), "-DCMAKE_BUILD_TYPE=Release",
            "-DBUILD_SHARED_LIBS=ON", "-DGGML_RPC=ON", "-DGGML_NATIVE=ON", "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
            "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF",
        ]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(tree), "--target", "llama", "ggml-rpc-server",
                        "-j", str(os.cpu_count() or 2)], check=True, stdout=subprocess.DEVNULL)
        for path in (tree / "bin").iterdir():
            if path.name == "ggml-rpc-server" or path.name.startswith(LIBRARIES):
                shutil.copy2(path, out / path.name, follow_symlinks=False)

    return cached_dir(f"llama.cpp-{VERSION}-rpc", build)
