"""GGUF files written byte by byte, so that a test can say exactly what is wrong with one: a count, a length, a
type, an offset. `build` returns the bytes and where each section starts (`marks`), for truncating a file at
every section boundary. The format is gguf-py's (GGUF v3, little-endian): magic, version, tensor count, key/value
count, the key/values, the tensor infos, padding to the alignment, the tensor data."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gguf import GGUFValueType

VT = GGUFValueType
_FORMATS = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I", VT.INT32: "<i",
            VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d"}


def string(text: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string; `length` overrides the length field (a lie about the bytes that follow)."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def value(vtype: int, v) -> bytes:
    """A value of type `vtype`; an array is `(item_type, items)` or `(item_type, items, claimed_count)`."""
    if vtype == VT.STRING:
        return string(v)
    if vtype == VT.ARRAY:
        itype, items, *count = v
        n = count[0] if count else len(items)
        return struct.pack("<IQ", itype, n) + b"".join(value(itype, x) for x in items)
    return struct.pack(_FORMATS[VT(vtype)], v)


def kv(key: str, vtype: int, v) -> bytes:
    return string(key) + struct.pack("<I", vtype) + value(vtype, v)


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    type: int = 0  # F32
    offset: int | None = None  # None: packed after the previous tensor, as writers do
    n_dims: int | None = None  # overrides len(shape) in the file


@dataclass
class Layout:
    data: bytes
    marks: dict[str, int] = field(default_factory=dict)  # section → the byte offset where it starts


def tensor_nbytes(t: Tensor) -> int:
    """The bytes of `t`'s data; 0 for a type ggml does not know."""
    from gguf import GGML_QUANT_SIZES

    if t.type not in GGML_QUANT_SIZES:
        return 0
    block, size = GGML_QUANT_SIZES[t.type]
    n = 1
    for d in t.shape:
        n *= d
    return n // block * size


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def build(kvs: list[bytes] | None = None, tensors: list[Tensor] | None = None, *, magic: bytes = b"GGUF",
          version: int = 3, n_tensors: int | None = None, n_kv: int | None = None, alignment: int = 32,
          with_data: bool = True) -> Layout:
    """A GGUF file; by default a valid one holding `general.architecture = llama` and two small F32 tensors."""
    kvs = [kv("general.architecture", VT.STRING, "llama")] if kvs is None else kvs
    tensors = [Tensor("a.weight", (8, 2)), Tensor("b.weight", (8,))] if tensors is None else tensors
    marks: dict[str, int] = {}
    out = bytearray()

    def mark(name: str) -> None:
        marks.setdefault(name, len(out))

    mark("magic")
    out += magic
    mark("version")
    out += struct.pack("<I", version)
    mark("tensor count")
    out += struct.pack("<Q", len(tensors) if n_tensors is None else n_tensors)
    mark("key/value count")
    out += struct.pack("<Q", len(kvs) if n_kv is None else n_kv)
    for entry in kvs:
        mark("a key's length")
        if len(entry) >= 8:
            (n,) = struct.unpack_from("<Q", entry)
            if n < len(entry) - 8:
                marks.setdefault("a key's text", len(out) + 8)
                marks.setdefault("a value's type", len(out) + 8 + n)
                marks.setdefault("a value", len(out) + 12 + n)
        out += entry
    offset = 0
    for t in tensors:
        mark("a tensor's name")
        out += string(t.name)
        mark("a tensor's dimension count")
        out += struct.pack("<I", len(t.shape) if t.n_dims is None else t.n_dims)
        mark("a tensor's dimensions")
        out += b"".join(struct.pack("<Q", d) for d in t.shape)
        mark("a tensor's type")
        out += struct.pack("<I", t.type)
        mark("a tensor's offset")
        out += struct.pack("<Q", offset if t.offset is None else t.offset)
        offset += _pad(tensor_nbytes(t), alignment)
    mark("the alignment padding")
    out += b"\0" * (_pad(len(out), alignment) - len(out))
    if with_data and tensors:
        mark("the tensor data")
        for i, t in enumerate(tensors):
            if i == 1:
                mark("the second tensor's data")
            n = tensor_nbytes(t)
            out += bytes((j * 7 + i) % 251 for j in range(n)) + b"\0" * (_pad(n, alignment) - n)
    return Layout(bytes(out), marks)
