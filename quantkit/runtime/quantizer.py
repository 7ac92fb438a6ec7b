"""libllama's quantizer (`llama_model_quantize`): parameters in, return code and libllama's log lines out."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np

from ._lib import capture, lib


def model_quantize(src: Path, dst: Path, ftype: int, *, threads: int | None = None, dry_run: bool = False,
                   allow_requantize: bool = False, imatrix: dict[str, np.ndarray] | None = None,
                   tensor_types: dict[str, int] | None = None, metadata: dict[str, str] | None = None
                   ) -> tuple[int, list[str]]:
    """Quantize `src` into `dst` as llama file type `ftype`; `imatrix` maps tensor names to per-column
    importance (llama-quantize's normalised values); `tensor_types` maps tensor names to the ggml type each must
    get (libllama's tensor-type overrides, one anchored pattern per name); `metadata` adds string keys to the
    file (libllama's kv overrides, at most 127 bytes each). Returns libllama's code (0: success) and its log
    lines."""
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
    if tensor_types:
        overrides, tt_keep = _tensor_type_array(tensor_types)
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
        keep = (keep, tt_keep)
    if metadata:
        kv = _kv_array(metadata)
        params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(llama_cpp.llama_model_kv_override))
        keep = (keep, kv)
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


def _tensor_type_array(types: dict[str, int]):
    llama_cpp = lib()
    entries = (llama_cpp.llama_model_tensor_override * (len(types) + 1))()
    keep: list = [entries]
    for i, (name, ggml_type) in enumerate(types.items()):
        pattern = ctypes.create_string_buffer(f"^{re.escape(name)}$".encode())
        keep.append(pattern)
        entries[i].pattern = ctypes.cast(pattern, ctypes.c_char_p)
        entries[i].type = int(ggml_type)
    entries[len(types)].pattern = None  # terminator
    return entries, keep


def _kv_array(metadata: dict[str, str]):
    llama_cpp = lib()
    entries = (llama_cpp.llama_model_kv_override * (len(metadata) + 1))()
    for i, (key, value) in enumerate(metadata.items()):
        key_b, value_b = key.encode(), value.encode()
        if len(key_b) > 127 or len(value_b) > 127:
            raise ValueError(f"libllama's kv overrides hold at most 127 bytes: {key}")
        entries[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
        entries[i].key = key_b
        entries[i].value.val_str = value_b
    entries[len(metadata)].key = b""  # terminator
    return entries
