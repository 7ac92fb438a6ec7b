"""The one place that opens GGUF files for reading: validates them (bad magic, truncated header, tensors past
the end of the file become typed errors) and reads their metadata."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, LlamaFileType

from ..errors import CorruptGGUFError
from .header import GGUFHeader
from .shards import SplitReader, read_model_header, shards_of

log = logging.getLogger(__name__)


def read_header(path: str | Path) -> GGUFHeader:
    """Validate `path` as a GGUF file and return its header (metadata and tensor infos), fast; any shard of a
    split model gives the header of the whole model."""
    return read_model_header(Path(path))


@dataclass(frozen=True)
class GGUFFile:
    """A local GGUF model read once: the path it was named by (any shard of a split model) and the validated
    header of the whole model. A command reads it at the top and hands it down, so that nothing below parses
    the header again; only what opens the file (libllama, gguf's reader) needs the path."""

    path: Path
    header: GGUFHeader

    @property
    def shards(self) -> list[Path]:
        """Its files: the shards in order, or `[path]`."""
        return shards_of(self.path, self.header)

    @property
    def first_shard(self) -> Path:
        """The file to give libllama (which loads the other shards itself, and only from the first)."""
        return self.shards[0]


def read_gguf(model: str | Path | GGUFFile) -> GGUFFile:
    """`model` read and validated (`read_header`); a GGUFFile already read is returned as it is."""
    if isinstance(model, GGUFFile):
        return model
    return GGUFFile(Path(model), read_header(model))


def open_gguf(model: str | Path | GGUFFile) -> GGUFReader:
    """Open `model` with gguf's reader, for access to tensor data and token strings (all shards of a split
    model); validated first by `read_gguf` (unless already read) so that later reads cannot fail."""
    model = read_gguf(model)
    path = model.path
    try:
        shards = model.shards
        return GGUFReader(path) if len(shards) == 1 else SplitReader([GGUFReader(p) for p in shards])
    except (ValueError, KeyError, IndexError, OverflowError, UnicodeDecodeError, MemoryError) as e:
        raise CorruptGGUFError(f"{path} has a corrupt or truncated GGUF header ({_short(e)})") from e


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:120]


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
