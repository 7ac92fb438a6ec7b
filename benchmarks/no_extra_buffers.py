"""Run a llama-cpp-python program with ggml's CPU "extra" buffer types (weight repacking, AMX) off.

    python benchmarks/no_extra_buffers.py -m llama_cpp.server --model M.gguf ...
    python benchmarks/no_extra_buffers.py path/to/server.py -C config.json

In the llama-cpp-python 0.3.36 wheel ggml's AMX matmul crashes with SIGSEGV on the first decode on AMX CPUs (see
quantkit/runtime/devices.py). llama-cpp-python's servers have no flag or environment variable for
`use_extra_bufts`, so, like tests/_fixtures/llama_reference.py, this patches `llama_model_default_params` before
the program loads its model — the switch llama.cpp's own tools spell `--no-repack`. Used by benchmarks/serve.py;
never imported by the package.
"""
from __future__ import annotations

import runpy
import sys


def _without_extra_buffers() -> None:
    import llama_cpp
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    llama_cpp.llama_model_default_params = params


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    _without_extra_buffers()
    if sys.argv[1] == "-m":
        module = sys.argv[2]
        sys.argv = [module, *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
