"""The one place that opens GGUF files for reading: validates them and turns gguf-py's many failure modes
(bad magic, truncated header, tensors past the end of the file) into typed errors."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUF_MAGIC, GGUFReader, LlamaFileType

from .errors import CorruptGGUFError, InputNotFoundError, NotGGUFError

log = logging.getLogger(__name__)

_MAGIC_BYTES = GGUF_MAGIC.to_bytes(4, "little")
_HEADER_BYTES = 24  # magic, version, tensor count, kv count


def open_gguf(path: str | Path) -> GGUFReader:
    """Open `path` as a GGUF file, checking it thoroughly enough that later reads cannot fail."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise NotGGUFError(f"{path} is a folder, not a GGUF file")
    size = path.stat().st_size
    if size == 0:
        raise NotGGUFError(f"{path} is empty")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != _MAGIC_BYTES:
        raise NotGGUFError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
    if size < _HEADER_BYTES:
        raise CorruptGGUFError(f"{path} is truncated: {size} bytes, shorter than a GGUF header")
    try:
        reader = GGUFReader(path)
    except (ValueError, KeyError, IndexError, OverflowError, UnicodeDecodeError, MemoryError) as e:
        raise CorruptGGUFError(f"{path} has a corrupt or truncated GGUF header ({_short(e)})") from e
    _check_tensor_extents(path, reader, size)
    return reader


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:120]


def _check_tensor_extents(path: Path, reader: GGUFReader, size: int) -> None:
    for t in reader.tensors:
        end = t.data_offset + t.n_bytes
        if end > size:
            raise CorruptGGUFError(
                f"{path} is truncated: tensor {t.name} ends at byte {end:,} but the file has {size:,} bytes"
            )


def field(reader: GGUFReader, key: str, default: Any = None) -> Any:
    """The value of metadata `key` as a Python value (str, int, float, bool or list), or `default`."""
    f = reader.get_field(key)
    if f is None:
        return default
    value = f.contents()
    return default if value is None else value


def arch_field(reader: GGUFReader, suffix: str, default: Any = None) -> Any:
    """An architecture-scoped key, e.g. `block_count` → `llama.block_count`."""
    arch = field(reader, "general.architecture", "")
    return field(reader, f"{arch}.{suffix}", default)


def file_type_name(ftype: int | None) -> str | None:
    """`general.file_type` as llama.cpp's short name (15 → "Q4_K_M"), from gguf-py's LlamaFileType table."""
    if ftype is None:
        return None
    try:
        name = LlamaFileType(ftype).name
    except ValueError:
        return f"unknown ({ftype})"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def tensor_array(reader: GGUFReader, name: str) -> np.ndarray:
    for t in reader.tensors:
        if t.name == name:
            return t.data
    raise KeyError(name)
