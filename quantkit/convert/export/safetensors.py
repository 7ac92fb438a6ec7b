"""The safetensors format, written tensor by tensor: an 8-byte little-endian header length, a JSON header
(dtype, shape, data_offsets per tensor) padded to 8 bytes, then the tensors' bytes back to back.

The header needs every shape up front, which a GGUF gives without reading any data; the data is then
streamed, so memory holds one block of rows at a time. Large checkpoints are split into shards with a
`model.safetensors.index.json`, as transformers' `save_pretrained` does."""
from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}  # --dtype → safetensors dtype
_ITEM_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' default max_shard_size, "5GB"


@dataclass(frozen=True)
class SafetensorsEntry:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype: F32, F16, BF16

    @property
    def n_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _ITEM_BYTES[self.dtype]


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """bfloat16 bits (as uint16) of float32 values, rounded to nearest, ties to even; NaN stays NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out


def encode(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as the little-endian bytes of a safetensors dtype."""
    if dtype == "F32":
        return np.ascontiguousarray(values, dtype="<f4")
    if dtype == "F16":
        return np.ascontiguousarray(values).astype("<f2")
    if dtype == "BF16":
        return f32_to_bf16(values).astype("<u2", copy=False)
    raise ValueError(dtype)


def header_bytes(entries: Iterable[SafetensorsEntry]) -> bytes:
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.n_bytes]}
        offset += e.n_bytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text


def plan_shards(entries: list[SafetensorsEntry], max_shard_bytes: int) -> list[list[SafetensorsEntry]]:
    """Consecutive groups of tensors of at most `max_shard_bytes` each (a larger tensor gets a shard alone)."""
    shards: list[list[SafetensorsEntry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.n_bytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.n_bytes
    return shards


def shard_names(n_shards: int) -> list[str]:
    if n_shards == 1:
        return [SINGLE_FILE]
    return [f"model-{i:05d}-of-{n_shards:05d}.safetensors" for i in range(1, n_shards + 1)]


def write_shard(
    path: Path,
    entries: list[SafetensorsEntry],
    blocks: Callable[[SafetensorsEntry], Iterator[np.ndarray]],
    on_bytes: Callable[[int], None] = lambda n: None,
) -> None:
    """Write one safetensors file; `blocks(entry)` yields the entry's float32 values a block of rows at a time."""
    with open(path, "wb") as f:
        f.write(header_bytes(entries))
        for e in entries:
            written = 0
            for block in blocks(e):
                data = encode(block, e.dtype)
                f.write(data)
                written += data.nbytes
                on_bytes(data.nbytes)
            if written != e.n_bytes:
                raise AssertionError(f"{e.name}: wrote {written} bytes, header says {e.n_bytes}")


def index_json(shards: list[list[SafetensorsEntry]], names: list[str]) -> dict:
    return {
        "metadata": {"total_size": sum(e.n_bytes for shard in shards for e in shard)},
        "weight_map": {e.name: name for shard, name in zip(shards, names) for e in shard},
    }
