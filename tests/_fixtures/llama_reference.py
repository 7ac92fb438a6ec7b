"""llama.cpp (through llama-cpp-python's high-level `Llama`) as the reference implementation in tests."""
from __future__ import annotations

import contextlib
from pathlib import Path


def reference_llama(path: Path, **kwargs):
    """`llama_cpp.Llama(path, **kwargs)` with ggml's CPU extra buffer types (weight repacking, AMX) off: in the
    llama-cpp-python 0.3.36 wheel the AMX matmul crashes with SIGSEGV on the first decode on AMX CPUs (see
    quantkit/runtime.py), and `Llama` has no argument for it, so its default model params are patched while it
    loads."""
    import llama_cpp

    default = llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    with _patched(llama_cpp.llama_cpp, "llama_model_default_params", without_extra_buffers), \
         _patched(llama_cpp, "llama_model_default_params", without_extra_buffers):
        return llama_cpp.Llama(str(path), verbose=False, **kwargs)


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)
