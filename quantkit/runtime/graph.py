"""Read-only access to the ggml graph nodes an eval callback is shown: their operation, shape, sources and data.

`struct ggml_tensor` is laid out here with ctypes from ggml.h of the bundled llama.cpp; its size is checked
against libggml's own `ggml_tensor_overhead()` the first time, so a layout change fails loudly instead of reading
garbage. Data in host memory is viewed in place (valid only during the callback); data elsewhere (a GPU) is
copied out with `ggml_backend_tensor_get`.
"""
from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import RuntimeLoadError
from ._lib import lib

MAX_DIMS = 4
MAX_SRC = 10
MAX_NAME = 64
MAX_OP_PARAMS = 64
F32 = 0  # ggml_type
I32 = 26


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * MAX_DIMS),
        ("nb", ctypes.c_size_t * MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


_OP_OFFSET = _Tensor.op.offset


@cache
def _base() -> ctypes.CDLL:
    """libggml-base (tensor helpers, backend buffers), with the prototypes used here."""
    base = ctypes.CDLL(str(Path(lib().__file__).parent / "lib" / "libggml-base.so"))
    base.ggml_op_name.restype = ctypes.c_char_p
    base.ggml_op_name.argtypes = [ctypes.c_int]
    base.ggml_nbytes.restype = ctypes.c_size_t
    base.ggml_nbytes.argtypes = [ctypes.c_void_p]
    base.ggml_tensor_overhead.restype = ctypes.c_size_t
    base.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    base.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    base.ggml_backend_tensor_get.restype = None
    base.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    # ggml_tensor_overhead() = sizeof(struct ggml_object) + sizeof(struct ggml_tensor); ggml_object is 32 bytes
    if base.ggml_tensor_overhead() != 32 + ctypes.sizeof(_Tensor):
        raise RuntimeLoadError(f"this libggml's ggml_tensor is not the {ctypes.sizeof(_Tensor)}-byte struct quantkit "
                               "reads", hint="use the llama-cpp-python version quantkit pins")
    return base


@cache
def op_code(name: str) -> int:
    """The ggml_op value of operation `name` (e.g. "MUL_MAT"), looked up by name in libggml."""
    base = _base()
    for code in range(1024):
        op = base.ggml_op_name(code)
        if op is None:
            break
        if op.decode() == name:
            return code
    raise RuntimeLoadError(f"this libggml has no {name} operation")


def node_op(ptr: int) -> int:
    """The ggml_op of the node at `ptr` (fast: one int read, for the callback's `ask` calls)."""
    return ctypes.c_int.from_address(ptr + _OP_OFFSET).value


class Node:
    """A graph node (a `ggml_tensor *`) as an eval callback sees it."""

    __slots__ = ("ptr", "_t")

    def __init__(self, ptr: int):
        self.ptr = ptr
        self._t = _Tensor.from_address(ptr)

    @property
    def op(self) -> int:
        return self._t.op

    @property
    def type(self) -> int:
        return self._t.type

    @property
    def name(self) -> str:
        return self._t.name.decode(errors="replace")

    @property
    def ne(self) -> tuple[int, int, int, int]:
        return tuple(self._t.ne)

    def src(self, i: int) -> Node | None:
        p = self._t.src[i]
        return Node(p) if p else None

    def array(self) -> np.ndarray:
        """The data as an array of shape (ne3, ne2, ne1, ne0) with ggml's strides: a view of host memory (valid
        during the callback only), or a copy of device memory."""
        t = self._t
        dtype = {F32: np.float32, I32: np.int32}.get(t.type)
        if dtype is None or t.nb[0] != np.dtype(dtype).itemsize:
            raise RuntimeLoadError(f"graph node {self.name} has type {t.type}, not F32 or I32 with packed rows")
        shape = tuple(reversed(t.ne))
        strides = tuple(reversed(t.nb))
        span = sum((n - 1) * s for n, s in zip(shape, strides)) + np.dtype(dtype).itemsize
        base = _base()
        if t.buffer and not base.ggml_backend_buffer_is_host(t.buffer):
            nbytes = base.ggml_nbytes(self.ptr)
            host = np.empty(max(nbytes, span), dtype=np.uint8)
            base.ggml_backend_tensor_get(self.ptr, host.ctypes.data, 0, nbytes)
            return np.ndarray(shape, dtype=dtype, buffer=host, strides=strides)
        raw = (ctypes.c_char * span).from_address(t.data)
        return np.ndarray(shape, dtype=dtype, buffer=raw, strides=strides)


def weight_name(name: str) -> str:
    """A weight's name without a backend's decorations (`CUDA0#blk.0.attn_k.weight#0` → `blk.0.attn_k.weight`),
    as llama-imatrix filters it."""
    if "#" in name:
        name = name.split("#", 2)[1]
    return name
