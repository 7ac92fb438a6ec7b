"""ggml's own quantizers, row by row: `ggml_quantize_chunk` (the function libllama's quantizer calls) and the
type's `to_float` from ggml's type traits. Used to measure what a type does to a tensor before choosing it."""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from ._lib import ggml


class _TypeTraits(ctypes.Structure):  # struct ggml_type_traits (ggml.h)
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)
_bound = None  # the libggml handle whose functions carry the signatures below
_bind_lock = threading.Lock()


def _lib():
    global _bound
    with _bind_lock:
        if _bound is not None:
            return _bound
        g = ggml()
        g.ggml_quantize_chunk.restype = ctypes.c_size_t
        g.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p,
                                          ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                          ctypes.POINTER(ctypes.c_float)]
        g.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        g.ggml_get_type_traits.argtypes = [ctypes.c_int]
        g.ggml_row_size.restype = ctypes.c_size_t
        g.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        g.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        g.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        _bound = g
    return g


def row_bytes(ggml_type: int, n_per_row: int) -> int:
    """ggml_row_size: the bytes of one row of `n_per_row` values in `ggml_type`."""
    return int(_lib().ggml_row_size(int(ggml_type), int(n_per_row)))


def requires_imatrix(ggml_type: int) -> bool:
    """ggml_quantize_requires_imatrix (ggml aborts the process if such a type is quantized without one)."""
    return bool(_lib().ggml_quantize_requires_imatrix(int(ggml_type)))


def round_trip(ggml_type: int, rows: np.ndarray, imatrix: np.ndarray | None = None) -> tuple[np.ndarray, bytes]:
    """Quantize `rows` (2-D float32, one ggml row per numpy row) to `ggml_type` with ggml_quantize_chunk and
    dequantize them with the type's to_float. Returns the dequantized rows and the quantized bytes."""
    g = _lib()
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError("rows must be 2-D")
    n_rows, n_per_row = rows.shape
    traits = g.ggml_get_type_traits(int(ggml_type)).contents
    if n_per_row % traits.blck_size:
        raise ValueError(f"{traits.type_name.decode()} needs rows that are a multiple of {traits.blck_size}")
    if imatrix is None and requires_imatrix(ggml_type):
        raise ValueError(f"{traits.type_name.decode()} cannot be quantized without an importance matrix")
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (n_per_row,):
            raise ValueError(f"the importance vector has {imatrix.size} values for rows of {n_per_row}")
    size = row_bytes(ggml_type, n_per_row) * n_rows
    buf = ctypes.create_string_buffer(size)
    written = g.ggml_quantize_chunk(
        int(ggml_type), rows.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), buf, 0, n_rows, n_per_row,
        imatrix.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) if imatrix is not None else None)
    assert written == size, (written, size)
    out = np.empty_like(rows)
    if not traits.to_float:
        raise ValueError(f"ggml has no to_float for {traits.type_name.decode()}")
    _TO_FLOAT(traits.to_float)(buf, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), rows.size)
    return out, buf.raw
