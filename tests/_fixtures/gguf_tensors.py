"""A minimal GGUF tensor-table reader for tests that compare many large-vocabulary files: it skips the
metadata without building Python objects for each token string (gguf's GGUFReader takes seconds per file)."""
from __future__ import annotations

import mmap
import struct
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def tensor_table(path: Path) -> dict[str, tuple[GGMLQuantizationType, tuple[int, ...], bytes]]:
    """name -> (type, dims as GGUF lists them, stored bytes)."""
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    magic, version, n_tensors, n_kv = struct.unpack_from("<IIQQ", buf, 0)
    assert magic == 0x46554747 and version == 3
    pos, alignment = 24, 32
    for _ in range(n_kv):
        key, pos = _string(buf, pos)
        (vtype,) = struct.unpack_from("<I", buf, pos)
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", buf, pos + 4)
        pos = _skip(buf, pos + 4, vtype)
    infos = []
    for _ in range(n_tensors):
        name, pos = _string(buf, pos)
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        qtype, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        infos.append((name, GGMLQuantizationType(qtype), dims, offset))
    start = (pos + alignment - 1) // alignment * alignment
    out = {}
    for name, qtype, dims, offset in infos:
        block, type_size = GGML_QUANT_SIZES[qtype]
        n = 1
        for d in dims:
            n *= d
        n_bytes = n // block * type_size
        out[name] = (qtype, tuple(dims), bytes(buf[start + offset:start + offset + n_bytes]))
    return out


def _string(buf, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return bytes(buf[pos + 8:pos + 8 + n]).decode("utf-8"), pos + 8 + n


def _skip(buf, pos: int, vtype: int) -> int:
    if vtype in _FIXED:
        return pos + _FIXED[vtype]
    if vtype == _STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    assert vtype == _ARRAY
    etype, count = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if etype in _FIXED:
        return pos + _FIXED[etype] * count
    for _ in range(count):
        pos = _skip(buf, pos, etype)
    return pos
