"""libllama's quantizer (`llama_model_quantize`): parameters in, return code and libllama's log lines out."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ._lib import capture, lib


def model_quantize(src: Path, dst: Path, ftype: int, *, threads: int | None = None, dry_run: bool = False,
                   allow_requantize: bool = False, imatrix: dict[str, np.ndarray] | None = None
                   ) -> tuple[int, list[str]]:
    """Quantize `src` into `dst` as llama file type `ftype`; `imatrix` maps tensor names to per-column
    importance (llama-quantize's normalised values). Returns libllama's code (0: success) and its log lines."""
    llama_cpp = lib()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = threads or 0
    params.dry_run = dry_run
    params.allow_requantize = allow_requantize
    keep = None
    if imatrix is not None:
        entries, keep = _imatrix_array(imatrix)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    with capture() as lines:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    del keep  # the C side only borrowed the imatrix buffers until here
    return int(rc), lines


def _imatrix_array(data: dict[str, np.ndarray]):
    llama_cpp = lib()
    entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
    keep: list = [entries]
    for i, (name, values) in enumerate(data.items()):
        values = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(values)
        entries[i].name = name.encode()
        entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = values.size
    entries[len(data)].name = None  # terminator
    return entries, keep
