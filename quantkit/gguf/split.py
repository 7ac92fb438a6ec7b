"""Cutting a finished GGUF into llama.cpp's split shards (`split_gguf`, `--split-max-size`/`--split-max-tensors`),
with gguf's own split support: GGUFWriter's `split_max_size` / `split_max_tensors` plan the shards, name them and
add the split keys; the metadata is copied byte for byte and the tensor data by the kernel. Reading a split model
is gguf/shards.py's."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
from gguf import GGUF_DEFAULT_ALIGNMENT, GGUFValueType, GGUFWriter, Keys
from gguf.gguf_writer import GGUFValue

from ..errors import CorruptGGUFError
from ..files import _remove, _temp_name, check_free_space
from .header import GGUFHeader, padded, read_local_header, tensor_bytes
from .shards import SHARD_NAME, SPLIT_KEYS, glob_escape, shard_set, split_count

log = logging.getLogger(__name__)



# ---- writing ------------------------------------------------------------------------------------------------

class _RawValue:
    """A metadata value already packed (its type and bytes, copied from the source file)."""

    def __init__(self, packed: bytes):
        self.packed = packed


class _ShardWriter(GGUFWriter):
    """gguf's writer, planning and naming the shards, with metadata values copied as they are packed in the
    source file and the shards opened under temporary names."""

    def __init__(self, path: Path, arch: str, **kw):
        super().__init__(path, arch, **kw)
        self.kv_data = [{}]  # the source's own general.architecture comes with the rest, in its place

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        if isinstance(val, _RawValue):
            return val.packed
        return super()._pack_val(val, vtype, add_vtype, sub_type)

    def add_shard_kv_data(self) -> None:
        super().add_shard_kv_data()
        for kv in self.kv_data:  # llama-gguf-split's key order (it sets split.count last): the same bytes as its shards
            if Keys.Split.LLM_KV_SPLIT_COUNT in kv:
                kv[Keys.Split.LLM_KV_SPLIT_COUNT] = kv.pop(Keys.Split.LLM_KV_SPLIT_COUNT)

    def final_names(self) -> list[Path]:
        return super().format_shard_names(self.path)

    def format_shard_names(self, path: Path) -> list[Path]:
        return [_temp_name(p) for p in super().format_shard_names(path)]


def _value_type(packed: bytes) -> GGUFValueType:
    """The type of a packed metadata value (its first four bytes)."""
    return GGUFValueType(int.from_bytes(packed[:4], "little"))


def _raw_kv(path: Path, header: GGUFHeader) -> dict[str, bytes]:
    """Each key's value (type and data) exactly as the file packs it."""
    out = {}
    with open(path, "rb") as f:
        f.seek(24)  # magic, version, tensor count, key count
        for key, n in header.kv_bytes.items():
            raw = f.read(n)
            out[key] = raw[8 + len(key.encode("utf-8")):]
    return out


def split_gguf(path: str | Path, max_size: int | None = None, max_tensors: int | None = None) -> list[Path]:
    """Cut the single GGUF `path` into shards of at most `max_size` bytes of tensor data and `max_tensors`
    tensors (a tensor larger than `max_size` gets a shard of its own), beside it, named as llama.cpp names them;
    `path` itself is removed. Returns the shards in order — `[path]`, untouched, when the model fits in one
    (and the shards of `path` when it already is one).

    No shard appears under its final name before every shard is complete."""
    path = Path(path)
    if not max_size and not max_tensors:
        return [path]
    header = read_local_header(path)
    if split_count(header) > 1:
        return shard_set(path, split_count(header))  # already split (a file kept from an earlier run)
    writer = _ShardWriter(path, str(header.get("general.architecture", "")), split_max_size=max_size or 0,
                          split_max_tensors=max_tensors or 0)
    raw = _raw_kv(path, header)
    for key in header.kv:
        if key not in SPLIT_KEYS:
            writer.kv_data[0][key] = GGUFValue(_RawValue(raw[key]), _value_type(raw[key]))
    writer.data_alignment = header.alignment
    for t in header.tensors:
        writer.add_tensor_info(t.name, tuple(reversed(t.shape)), np.dtype(np.float32), tensor_bytes(t.type, t.shape),
                               raw_dtype=t.type)
    if len(writer.tensors) == 1:
        return [path]
    finals = writer.final_names()
    check_free_space(path.parent, sum(tensor_bytes(t.type, t.shape) for t in header.tensors))
    temps = writer.format_shard_names(path)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with open(path, "rb") as src:
            by_name = {t.name: t for t in header.tensors}
            for fout, shard in zip(writer.fout, writer.tensors):
                fout.flush()
                pos = fout.tell()
                for name in shard:
                    t = by_name[name]
                    pos = _pad(fout.fileno(), pos, header.alignment)
                    n = tensor_bytes(t.type, t.shape)
                    _copy(src.fileno(), header.header_bytes + t.offset, fout.fileno(), pos, n)
                    pos += n
                _pad(fout.fileno(), pos, header.alignment)
                os.fsync(fout.fileno())
        writer.close()
        # the first shard last: the name libllama is given appears only when the rest are in place
        for tmp, final in reversed(list(zip(temps, finals))):
            os.replace(tmp, final)
    except BaseException:
        writer.close()
        for tmp in temps:
            _remove(tmp)
        raise
    path.unlink()
    stem = path.name.removesuffix(".gguf")
    for old in path.parent.glob(f"{glob_escape(stem)}-*-of-*.gguf"):  # shards of an earlier split, cut otherwise
        m = SHARD_NAME.match(old.name)
        if m and m["prefix"] == stem and old not in finals:
            old.unlink()
    log.info("split %s into %d shards", path.name, len(finals))
    return finals


def _pad(fd: int, pos: int, alignment: int = GGUF_DEFAULT_ALIGNMENT) -> int:
    end = padded(pos, alignment)
    if end > pos:
        os.pwrite(fd, bytes(end - pos), pos)
    return end


def _copy(src: int, src_pos: int, dst: int, dst_pos: int, n: int) -> None:
    """`n` bytes from file to file, by the kernel where it can (copy_file_range), else through a buffer."""
    done = 0
    with contextlib.suppress(OSError, AttributeError):
        while done < n:
            k = os.copy_file_range(src, dst, n - done, src_pos + done, dst_pos + done)
            if k <= 0:
                break
            done += k
    while done < n:
        block = os.pread(src, min(n - done, 16 << 20), src_pos + done)
        if not block:
            raise CorruptGGUFError(f"the source GGUF ended inside a tensor (at byte {src_pos + done:,})")
        os.pwrite(dst, block, dst_pos + done)
        done += len(block)
