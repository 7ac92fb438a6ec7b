"""Streams a GGUF to disk tensor by tensor with gguf's GGUFWriter: header, metadata and tensor infos first, then
each tensor's bytes — copied by the kernel, or encoded a chunk of rows at a time on a pool of threads, each
writing its chunk at its own offset — into a temporary name that becomes the file only when complete."""
from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gguf import GGUFEndian, GGUFValueType, GGUFWriter, quant_shape_to_byte_shape

from ..files import WriteProgress, atomic_file, check_free_space
from .chunks import ChunkPool
from .passthrough import NaNScan, copy_range
from .tensors import ConvertedTensor

log = logging.getLogger(__name__)
_HEADER_ALLOWANCE = 64 << 20  # tokenizer arrays and the like, for the disk-space check


class _Writer(GGUFWriter):
    """gguf's writer, with the long metadata arrays (a 150k-token vocabulary, its merges and token types) packed
    in one pass instead of one struct call per item: the same bytes, in a tenth of the time."""

    _NUMPY = {GGUFValueType.INT32: "<i4", GGUFValueType.UINT32: "<u4", GGUFValueType.FLOAT32: "<f4"}
    _PYTHON = {GGUFValueType.STRING: str, GGUFValueType.INT32: int, GGUFValueType.FLOAT32: float}

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        packed = self._pack_long_array(val, sub_type) if vtype == GGUFValueType.ARRAY else None
        if packed is None:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        return (struct.pack("<I", vtype) if add_vtype else b"") + packed

    def _pack_long_array(self, val, sub_type) -> bytes | None:
        if not isinstance(val, list) or len(val) < 1024 or self.endianess != GGUFEndian.LITTLE:
            return None
        ltype = sub_type if sub_type is not None else GGUFValueType.get_type(val[0])
        want = self._PYTHON.get(ltype) if sub_type is None else (str if ltype == GGUFValueType.STRING else int)
        if want is None or not all(type(v) is want for v in val):  # mixed or unusual items: gguf's own path
            return None
        head = struct.pack("<IQ", ltype, len(val))
        if ltype == GGUFValueType.STRING:
            return head + _pack_strings(val)
        if ltype in self._NUMPY:
            return head + np.asarray(val, dtype=self._NUMPY[ltype]).tobytes()
        return None


def _pack_strings(strings: list[str]) -> bytes:
    """GGUF strings back to back: each its u64 length, then its UTF-8 bytes."""
    pack = struct.Struct("<Q").pack
    return b"".join([pack(len(e)) + e for e in (v.encode("utf-8") for v in strings)])


def write_gguf(dest: Path, arch: str, plans: list[ConvertedTensor], add_keys: Callable[[GGUFWriter], None],
               progress: WriteProgress | None = None, threads: int | None = None,
               check: Callable[[Path], None] | None = None) -> int:
    """Write the GGUF `dest`; `add_keys(writer)` adds the metadata once the tensors are announced (while a second
    thread already scans the bf16 tensors that will be copied as they are). `threads` encode the tensors whose
    bytes change (default: every core this process may run on). `check(path)`, given, sees the file under its
    temporary name — its header written and its size final, on a thread of its own while the tensor data is
    written, since it reads only the header — and may refuse it (raise) before it becomes `dest`."""
    total = sum(p.n_bytes for p in plans)
    check_free_space(dest.parent, total + _HEADER_ALLOWANCE)
    bf16_sources = [p.source for p in plans if p.source is not None and p.source.dtype == "BF16"]
    with atomic_file(dest) as tmp, NaNScan(bf16_sources) as scan, ThreadPoolExecutor(
            1, thread_name_prefix="quantkit-check") as checker:  # joined before the file is renamed or removed
        writer = _Writer(tmp, arch)
        checking = None
        try:
            for p in plans:
                info_shape = quant_shape_to_byte_shape(p.shape, p.qtype) if p.np_dtype == np.uint8 else p.shape
                writer.add_tensor_info(p.name, info_shape, np.dtype(p.np_dtype), p.n_bytes, raw_dtype=p.qtype)
            add_keys(writer)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            writer.flush()
            fd, start = writer.fout[0].fileno(), writer.fout[0].tell()
            os.ftruncate(fd, _data_end(start, writer.data_alignment, plans))
            checking = checker.submit(check, tmp) if check is not None else None
            _write_data(fd, start, writer.data_alignment, plans, scan, dest.name, progress, threads)
        finally:
            writer.close()
        if checking is not None:
            checking.result()  # the check's refusal, raised here
    log.info("wrote %s (%.1f MB)", dest, dest.stat().st_size / 1e6)
    return dest.stat().st_size


def _data_end(pos: int, alignment: int, plans: list[ConvertedTensor]) -> int:
    """The file's size once every tensor is written at its aligned offset after the header ending at `pos`."""
    for p in plans:
        pos = GGUFWriter.ggml_pad(pos, alignment) + p.n_bytes
    return GGUFWriter.ggml_pad(pos, alignment)


def _write_data(fd: int, pos: int, alignment: int, plans: list[ConvertedTensor], scan: NaNScan, label: str,
                progress: WriteProgress | None, threads: int | None = None) -> None:
    """Each tensor at its aligned offset after the header: copied by the kernel when its bytes are the
    checkpoint's (on this thread, while the pool encodes the chunks handed to it before), else encoded."""
    total = sum(p.n_bytes for p in plans)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total, label)

    offsets = []
    with ChunkPool(fd, threads, advance) as pool:
        for p in plans:
            pos = _pad(fd, pos, alignment)
            offsets.append(pos)
            if p.source is not None and copy_range(p.source, fd, pos):
                advance(p.n_bytes)
            else:
                pool.write(p, pos)
            pos += p.n_bytes
        _pad(fd, pos, alignment)
        pool.wait()
        for p, offset in zip(plans, offsets):  # the rare tensor with a signalling NaN, quieted as llama.cpp's is
            if p.source is not None and p.source.dtype == "BF16" and scan.needs_quieting(p.source):
                log.info("%s holds signalling NaNs: written again with the quiet bit set", p.name)
                pool.write(p, offset, count=False)
        pool.wait()


def _pad(fd: int, pos: int, alignment: int) -> int:
    end = GGUFWriter.ggml_pad(pos, alignment)
    if end > pos:
        os.pwrite(fd, bytes(end - pos), pos)
    return end
