"""A Hugging Face checkpoint read without torch: config.json, and safetensors files whose header we parse
ourselves and whose data we map with np.memmap, so a tensor costs no memory until it is read."""
from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import CheckpointError, InputNotFoundError, ModelConfigError

log = logging.getLogger(__name__)

# safetensors dtype -> numpy dtype of the stored bytes (bf16 is read as its raw 16 bits)
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
_MAX_HEADER = 100 << 20  # the safetensors format's own limit


@dataclass(frozen=True)
class CheckpointTensor:
    name: str
    dtype: str  # safetensors spelling: BF16, F16, F32
    shape: tuple[int, ...]
    file: Path
    offset: int  # absolute, in `file`

    @property
    def n_bytes(self) -> int:
        return _n_bytes(self.dtype, self.shape)


def _n_bytes(dtype: str, shape: tuple[int, ...]) -> int:
    n = np.dtype(_DTYPES[dtype]).itemsize
    for d in shape:  # Python integers: a hostile shape cannot overflow into a small number
        n *= d
    return n


@dataclass
class Checkpoint:
    folder: Path
    config: dict
    tensors: dict[str, CheckpointTensor] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        """config.json's architectures[0]; "" when it does not hold a list of names."""
        names = self.config.get("architectures")
        return names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""

    @property
    def n_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors.values())

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only memory map of the file (bf16 as uint16 bits)."""
        t = self.tensors[name]
        return np.memmap(t.file, dtype=_DTYPES[t.dtype], mode="r", offset=t.offset, shape=t.shape)


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json: it is not a Hugging Face model folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelConfigError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelConfigError(f"{path} does not hold a JSON object")
    return config


def open_checkpoint(folder: str | Path) -> Checkpoint:
    folder = Path(folder)
    if not folder.exists():
        raise InputNotFoundError(f"{folder} does not exist")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file, not a checkpoint folder")
    checkpoint = Checkpoint(folder, read_config(folder))
    for file in _weight_files(folder):
        for info in read_safetensors_header(file):
            if info.name in checkpoint.tensors:
                raise CheckpointError(f"tensor {info.name} appears in two files of {folder}")
            checkpoint.tensors[info.name] = info
    log.info("%s: %d tensors, %.2f GB", folder, len(checkpoint.tensors), checkpoint.n_bytes / 1e9)
    return checkpoint


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({type(e).__name__}: {e})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index} is not a valid safetensors index (its weight_map is not names → files)")
        outside = [name for name in weight_map.values() if Path(name).name != name or name in ("", ".", "..")]
        if outside:
            raise CheckpointError(f"{index} names a shard outside its folder: {outside[0]!r}",
                                  hint="a checkpoint's index names files in its own folder: download it again")
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder} lacks shard(s) named in its index: {', '.join(missing)}",
                                  hint="download the checkpoint again")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    if list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth")):
        raise CheckpointError(
            f"{folder} holds only pickle (.bin/.pt) weights: quantkit reads safetensors only",
            hint="pickle files can run code when loaded; convert them with transformers "
                 "(model.save_pretrained(folder, safe_serialization=True)) or use the repo's safetensors revision",
        )
    raise CheckpointError(f"{folder} holds no .safetensors weights")


def read_safetensors_header(file: Path) -> list[CheckpointTensor]:
    """The tensors of one safetensors file, checked against the file's size."""
    with open(file, "rb") as f:
        return parse_safetensors_header(f, file, os.fstat(f.fileno()).st_size)


def parse_safetensors_header(f: BinaryIO, file: Path, size: int) -> list[CheckpointTensor]:
    """Check a safetensors header the way the safetensors library does before anything is read for it: a length
    that fits the file, a JSON object of entries with a dtype, a shape of non-negative sizes and data offsets
    that match the shape, and tensors that follow each other without gaps or overlaps to the end of the file."""
    head = f.read(8)
    if len(head) < 8:
        raise _corrupt(file, "shorter than a safetensors header")
    (n,) = struct.unpack("<Q", head)
    if n > _MAX_HEADER or 8 + n > size:
        raise _corrupt(file, f"header length {n:,} does not fit a {size:,}-byte file")
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise _corrupt(file, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(file, "its header is not a JSON object")
    header.pop("__metadata__", None)
    tensors = [_checkpoint_tensor(file, name, entry, 8 + n, size) for name, entry in header.items()]
    end = 8 + n
    for t in sorted(tensors, key=lambda t: (t.offset, t.n_bytes)):
        if t.offset != end:
            why = "overlaps the tensor before it" if t.offset < end else f"leaves {t.offset - end:,} bytes unused before it"
            raise _corrupt(file, f"tensor {t.name} {why}")
        end += t.n_bytes
    if end != size:
        raise _corrupt(file, f"its tensors end at byte {end:,} of {size:,}")
    return tensors


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _checkpoint_tensor(file: Path, name: str, entry, base: int, size: int) -> CheckpointTensor:
    try:
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    except (KeyError, TypeError):
        raise _corrupt(file, f"the header entry of {name} is malformed") from None
    if (not isinstance(dtype, str) or not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape)
            or not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise _corrupt(file, f"the header entry of {name} is malformed")
    if dtype not in _DTYPES:
        raise CheckpointError(f"tensor {name} in {file.name} is {dtype}; quantkit converts F32, F16 and BF16 weights",
                              hint="use an unquantized checkpoint")
    start, end = offsets
    info = CheckpointTensor(name, dtype, tuple(shape), file, base + start)
    if end - start != info.n_bytes or base + end > size:
        raise _corrupt(file, f"tensor {name} does not fit its shape {list(shape)} or the file")
    return info


def _corrupt(file: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{file} is not a valid safetensors file: {why}",
                           hint="the download may be incomplete: fetch the checkpoint again")
