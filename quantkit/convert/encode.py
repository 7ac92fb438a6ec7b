"""Checkpoint rows, in their stored dtype (bf16 as its uint16 bits), to the bytes a GGUF tensor of a given type
holds — the bytes gguf-py's `quants.quantize` gives for the same values in float32, which is what
convert_hf_to_gguf.py writes.

The common cases take shorter roads to the same bytes: bf16 → F16 is a table of all 65,536 bf16 values (built
by numpy's own cast), and Q8_0 rounds half away from zero in one add instead of gguf's five passes. A Q8_0 row
block that holds an Inf or a NaN, or whose scale overflows, goes through gguf itself. Every road is compared with
gguf.quants in the tests.
"""
from __future__ import annotations

from functools import cache

import numpy as np
from gguf import GGMLQuantizationType, quants

Q8_0_BLOCK = 32
# the stored type whose bits are the checkpoint's own
SAME_BITS = {"BF16": GGMLQuantizationType.BF16, "F16": GGMLQuantizationType.F16, "F32": GGMLQuantizationType.F32}
_HALF_DOWN = np.array(np.nextafter(np.float32(0.5), np.float32(0)))  # x + copysign(this, x), truncated, is roundf(x)


def encode(raw: np.ndarray, dtype: str, qtype: GGMLQuantizationType) -> np.ndarray:
    """The GGUF bytes of `raw` (values of safetensors dtype `dtype`) stored as `qtype`."""
    if SAME_BITS.get(dtype) == qtype:
        return stored_bits(raw)
    if dtype == "BF16" and qtype == GGMLQuantizationType.F16:
        return np.take(_f16_of_bf16(), raw)
    values = as_f32(raw)
    if qtype == GGMLQuantizationType.Q8_0:
        return q8_0(values)
    return quants.quantize(values, qtype)


def as_f32(raw: np.ndarray) -> np.ndarray:
    if raw.dtype == np.uint16:  # bf16 bits
        return np.left_shift(raw, 16, dtype=np.uint32).view(np.float32)
    return raw.astype(np.float32)


def stored_bits(raw: np.ndarray) -> np.ndarray:
    """The stored bits as they are, except that a bf16 NaN gets its quiet bit, as gguf's bf16 rounding gives it."""
    block = np.array(raw)
    if block.dtype == np.uint16:
        nan = (block & 0x7FFF) > 0x7F80
        if nan.any():
            block[nan] |= 0x0040
    return block


@cache
def _f16_of_bf16() -> np.ndarray:
    """F16 bits of every bf16 value, by the cast gguf uses (float32 → float16, rounding to nearest even)."""
    with np.errstate(over="ignore"):
        return (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32).astype(np.float16).view(np.uint16)


def q8_0(values: np.ndarray) -> np.ndarray:
    """gguf's Q8_0 of float32 `values` (rows of whole 32-value blocks): per block, the f16 scale amax/127 and
    32 int8s, each value times 1/scale rounded half away from zero."""
    blocks = values.reshape(-1, Q8_0_BLOCK)
    amax_bits = np.maximum.reduce(blocks.view(np.uint32) & np.uint32(0x7FFFFFFF), axis=1)
    if amax_bits.max(initial=0) >= 0x7F800000:  # an Inf or NaN: gguf's own passes decide its bytes
        return quants.quantize(values, GGMLQuantizationType.Q8_0)
    d = amax_bits.view(np.float32) / np.float32(127)
    with np.errstate(divide="ignore"):
        inverse = np.where(d == 0, np.float32(0), np.float32(1) / d)
    if not np.isfinite(inverse).all():  # a scale so small that 1/d overflows
        return quants.quantize(values, GGMLQuantizationType.Q8_0)
    scaled = blocks * inverse[:, None]
    half = scaled.view(np.uint32) & np.uint32(0x80000000)  # ±(just under ½) by bits: copysign is slower
    half |= _HALF_DOWN.view(np.uint32)
    scaled += half.view(np.float32)  # exact: |scaled| ≤ 127, far from float32's rounding limits
    out = np.empty((blocks.shape[0], 2 + Q8_0_BLOCK), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = scaled.astype(np.int8).view(np.uint8)  # the cast truncates toward zero
    return out.reshape(*values.shape[:-1], -1)
