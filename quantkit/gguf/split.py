"""Split GGUF models, in llama.cpp's format: shards named `<Name>-00001-of-00003.gguf`, each a GGUF of its own
with `split.no` (0-based), `split.count` and `split.tensors.count`; the first shard holds all the metadata, the
others only the split keys, and the tensors are spread over the shards in file order (as llama-gguf-split and
gguf's GGUFWriter make them; libllama loads them given the first shard).

Writing (`split_gguf`) cuts a finished single file into shards with gguf's own split support (GGUFWriter's
`split_max_size` / `split_max_tensors` plan the shards, name them and add the split keys); the metadata is
copied byte for byte and the tensor data by the kernel. Reading (`read_model_header`) takes any shard and
returns the header of the whole model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from pathlib import Path

import numpy as np
from gguf import GGUF_DEFAULT_ALIGNMENT, GGUFValueType, GGUFWriter, Keys
from gguf.gguf_writer import GGUFValue

from ..errors import CorruptGGUFError, InputNotFoundError
from ..files import _remove, _temp_name, check_free_space
from .header import GGUFHeader, padded, read_local_header, tensor_bytes

log = logging.getLogger(__name__)

_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
SPLIT_KEYS = (Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)


def shard_name(path: Path, no: int, count: int) -> Path:
    """The name of shard `no` (0-based) of `count` for the model file `path`
    (`X-Q8_0.gguf` → `X-Q8_0-00001-of-00003.gguf`)."""
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.gguf')}-{no + 1:05d}-of-{count:05d}.gguf")


def _shard_set(path: Path, count: int) -> list[Path]:
    m = _SHARD.match(path.name)
    if m is None or int(m["count"]) != count:
        raise CorruptGGUFError(f"{path} is one of {count} shards of a split model, but its name does not say which",
                               hint="keep the shards' names as they were made: <Name>-00001-of-00003.gguf …")
    return [path.with_name(f"{m['prefix']}-{i + 1:05d}-of-{count:05d}.gguf") for i in range(count)]


def shard_paths(path: str | Path) -> list[Path]:
    """All the files of the model that `path` belongs to: its shards in order, or `[path]` for a single file."""
    path = Path(path)
    count = _split_count(read_local_header(path))
    return _shard_set(path, count) if count > 1 else [path]


def first_shard(path: str | Path) -> Path:
    """The file to give libllama (which loads the other shards itself, and only from the first)."""
    path = Path(path)
    m = _SHARD.match(path.name)
    if m is None or not path.is_file():
        return path
    return shard_paths(path)[0]


def find_shards(path: str | Path) -> list[Path] | None:
    """The complete shard set made from the model file name `path` (`X.gguf` → `X-00001-of-0000N.gguf` …), or
    None when there is none, or not all of it."""
    path = Path(path)
    stem = path.name.removesuffix(".gguf")
    for first in sorted(path.parent.glob(f"{glob_escape(stem)}-00001-of-*.gguf")):
        m = _SHARD.match(first.name)
        if m is None or m["prefix"] != stem:
            continue
        shards = [shard_name(path, i, int(m["count"])) for i in range(int(m["count"]))]
        if all(s.is_file() for s in shards):
            return shards
    return None


def model_files(path: str | Path) -> list[Path]:
    """The files of the model made under the name `path`: `[path]`, or the shards split from it."""
    path = Path(path)
    if path.is_file():
        return shard_paths(path)
    return find_shards(path) or [path]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _split_count(header: GGUFHeader) -> int:
    return int(header.get(Keys.Split.LLM_KV_SPLIT_COUNT, 0) or 0)


def read_model_header(path: str | Path) -> GGUFHeader:
    """The header of the model that `path` holds: of the file itself, or — for any shard of a split model — of
    all its shards together (the first shard's metadata, every shard's tensors, their sizes summed). A missing
    or mismatched shard is an error."""
    path = Path(path)
    header = read_local_header(path)
    count = _split_count(header)
    if count <= 1:
        return header
    shards = _shard_set(path, count)
    headers = []
    for i, shard in enumerate(shards):
        if not shard.is_file():
            raise InputNotFoundError(f"{shard.name} is missing: {path.name} is one of {count} shards of a split model",
                                     hint="put every shard of the model in the same folder")
        h = header if shard == path else read_local_header(shard)
        if int(h.get(Keys.Split.LLM_KV_SPLIT_NO, -1)) != i or _split_count(h) != count:
            raise CorruptGGUFError(f"{shard.name} is not shard {i + 1} of {count} of the same model",
                                   hint="make or download the split model again")
        headers.append(h)
    tensors = [t for h in headers for t in h.tensors]
    expected = int(headers[0].get(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, len(tensors)))
    if len(tensors) != expected:
        raise CorruptGGUFError(f"the {count} shards of {shards[0].name} hold {len(tensors)} tensors, not {expected}",
                               hint="make or download the split model again")
    return dataclasses.replace(headers[0], tensors=tensors, file_size=sum(h.file_size or 0 for h in headers),
                               header_bytes=sum(h.header_bytes for h in headers))


class SplitReader:
    """gguf's GGUFReader over every shard of a split model: the metadata of the first, the tensors of all."""

    def __init__(self, readers: list):
        self.readers = readers
        self.fields = readers[0].fields
        self.tensors = [t for r in readers for t in r.tensors]

    def get_field(self, key: str):
        return self.readers[0].get_field(key)


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
    if _split_count(header) > 1:
        return _shard_set(path, _split_count(header))  # already split (a file kept from an earlier run)
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
        m = _SHARD.match(old.name)
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
