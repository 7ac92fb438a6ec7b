"""Importance-matrix files: llama.cpp's GGUF imatrix format (read and written) and the legacy `.dat` (read, and
written for tests and old tools).

The GGUF format keeps the raw statistics: per weight tensor `<name>.in_sum2` (F32, one row per expert, one column
per input column: the sum over tokens of x²) and `<name>.counts` (F32, the tokens each row saw), with
`general.type = imatrix`, `imatrix.datasets`, `imatrix.chunk_count` and `imatrix.chunk_size`. The legacy format
keeps only the mean times the number of chunks (`ncall`). `importance()` normalises either one exactly the way
llama-quantize does before handing it to libllama's quantizer.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, Keys

from ..errors import ImatrixMismatchError, InputNotFoundError, NotImatrixError, QuantkitError
from ..files import atomic_file

if TYPE_CHECKING:
    from ..gguf.reader import GGUFFile

SUMS_SUFFIX = ".in_sum2"
COUNTS_SUFFIX = ".counts"


@dataclass
class ImatrixEntry:
    """The statistics of one weight tensor: `sums` (n_mat, n_cols) float32, `counts` (n_mat,) int64 — n_mat is
    the number of experts for a MUL_MAT_ID weight, else 1."""

    sums: np.ndarray
    counts: np.ndarray

    @property
    def n_cols(self) -> int:
        return int(self.sums.shape[1])


@dataclass
class Imatrix:
    """An importance matrix: raw sums of squares and token counts per weight tensor.

    `legacy` marks data read from a `.dat` file, whose sums are already means × ncall and whose counts are the
    ncall (its rows are not split per expert: n_mat is 1).
    """

    entries: dict[str, ImatrixEntry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False

    def importance(self) -> dict[str, np.ndarray]:
        """Per-tensor importance (the mean of x² per column, per expert), normalised the way llama-quantize
        does: sums / count per expert, 1 where an expert saw no token; legacy: sums / ncall."""
        out: dict[str, np.ndarray] = {}
        for name, e in self.entries.items():
            sums = e.sums.astype(np.float32, copy=False)
            if self.legacy:
                ncall = int(e.counts[0]) if e.counts.size else 0
                values = sums / np.float32(ncall) if ncall > 0 else sums.copy()
            else:
                count = e.counts.astype(np.float32)[:, None]
                values = np.where(count > 0, sums / np.where(count > 0, count, 1), np.float32(1))
            out[name] = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        return out


# ---------------------------------------------------------------------------------------------------------------
# reading


def read_imatrix(path: Path) -> Imatrix:
    """Read a GGUF imatrix or a legacy `.dat` one (told apart by the GGUF magic, as llama.cpp does)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    with open(path, "rb") as f:
        magic = f.read(4)
    return _read_gguf(path) if magic == b"GGUF" else _read_legacy(path)


def load_imatrix(path: Path) -> dict[str, np.ndarray]:
    """The importance values of the imatrix file `path`, ready for libllama's quantizer."""
    return read_imatrix(path).importance()


def _read_gguf(path: Path) -> Imatrix:
    from ..gguf.reader import field as kv, open_gguf

    try:
        reader = open_gguf(path)
    except QuantkitError as e:
        raise NotImatrixError(f"{path} is not an importance matrix ({e.message})") from None
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        for suffix, into in ((SUMS_SUFFIX, sums), (COUNTS_SUFFIX, counts)):
            if t.name.endswith(suffix):
                if t.tensor_type != GGMLQuantizationType.F32:
                    raise NotImatrixError(f"{path}: {t.name} is {t.tensor_type.name}, not F32")
                into[t.name.removesuffix(suffix)] = np.asarray(t.data, dtype=np.float32)
    if not sums:
        raise NotImatrixError(f"{path} holds no importance matrix (no *.in_sum2 tensors)")
    entries = {}
    for name in sorted(sums):
        c = counts.get(name)
        s = sums[name]
        if c is None or c.size == 0 or s.size % c.size:
            raise NotImatrixError(f"{path}: the counts of {name} do not match its sums",
                                  hint="make the importance matrix again")
        entries[name] = ImatrixEntry(s.reshape(c.size, -1).copy(), np.rint(c.reshape(-1)).astype(np.int64))
    if missing := sorted(set(counts) - set(sums)):
        raise NotImatrixError(f"{path}: {missing[0]} has counts but no sums", hint="make the importance matrix again")
    datasets = kv(reader, Keys.IMatrix.DATASETS, [])
    return Imatrix(entries, datasets=list(datasets) if isinstance(datasets, list) else [str(datasets)],
                   chunk_count=int(kv(reader, Keys.IMatrix.CHUNK_COUNT, 0)),
                   chunk_size=int(kv(reader, Keys.IMatrix.CHUNK_SIZE, 0)))


def _read_legacy(path: Path) -> Imatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise NotImatrixError(f"{path} is not an importance matrix (neither GGUF nor a complete legacy .dat)")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    (n_entries,) = take("<i")
    if not 0 < n_entries < 1_000_000:
        raise NotImatrixError(f"{path} is not an importance matrix (neither GGUF nor a legacy .dat)")
    entries = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        if not 0 < length < 4096:
            raise NotImatrixError(f"{path} is not an importance matrix (a tensor name of {length} bytes)")
        try:
            name = bytes(take(f"<{length}s")[0]).decode()
        except UnicodeDecodeError:
            raise NotImatrixError(f"{path} is not an importance matrix (a tensor name is not text)") from None
        ncall, nval = take("<ii")
        if nval < 1:
            raise NotImatrixError(f"{path}: {name} has {nval} values")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=pos) if pos + 4 * nval <= len(data) else None
        if sums is None:
            raise NotImatrixError(f"{path} is truncated (in the values of {name})")
        pos += 4 * nval
        entries[name] = ImatrixEntry(sums.astype(np.float32).reshape(1, -1), np.array([ncall], dtype=np.int64))
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):  # the trailing chunk count and dataset name are optional
        (chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if 0 < length <= len(data) - pos:
                datasets.append(data[pos:pos + length].decode(errors="replace"))
    return Imatrix(entries, datasets=datasets, chunk_count=chunk_count, chunk_size=0, legacy=True)


# ---------------------------------------------------------------------------------------------------------------
# writing


def write_imatrix(imatrix: Imatrix, path: Path) -> Path:
    """Write `imatrix` in llama.cpp's GGUF imatrix format (the layout llama-imatrix writes: the same keys, the
    tensors sorted by name), atomically."""
    if imatrix.legacy:
        raise NotImatrixError("a legacy imatrix holds means, not the raw sums the GGUF format keeps",
                              hint="write it with write_legacy_imatrix, or compute it again")
    path = Path(path)
    with atomic_file(path) as tmp:
        writer = GGUFWriter(tmp, arch="imatrix")
        del writer.kv_data[0][Keys.General.ARCHITECTURE]  # llama-imatrix writes no architecture
        writer.add_type("imatrix")
        writer.add_array(Keys.IMatrix.DATASETS, list(imatrix.datasets))
        writer.add_uint32(Keys.IMatrix.CHUNK_COUNT, imatrix.chunk_count)
        writer.add_uint32(Keys.IMatrix.CHUNK_SIZE, imatrix.chunk_size)
        for name in sorted(imatrix.entries):
            e = imatrix.entries[name]
            sums = np.ascontiguousarray(e.sums, dtype=np.float32)
            counts = e.counts.astype(np.float32).reshape(-1, 1)
            if len(counts) == 1:  # ggml writes the dimensions up to the last one above 1: (n,) and (1,)
                sums, counts = sums.reshape(-1), counts.reshape(-1)
            writer.add_tensor(name + SUMS_SUFFIX, sums)
            writer.add_tensor(name + COUNTS_SUFFIX, counts)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def write_legacy_imatrix(imatrix: Imatrix, path: Path) -> Path:
    """Write `imatrix` in the legacy `.dat` format, as llama-imatrix's `--output-format dat` does: per tensor
    mean × ncall (ncall = tokens / chunk size, rounded up), then the chunk count and the last dataset."""
    path = Path(path)
    chunk_size = imatrix.chunk_size or 1
    out = bytearray(struct.pack("<i", len(imatrix.entries)))
    for name in sorted(imatrix.entries):
        e = imatrix.entries[name]
        raw = name.encode()
        if imatrix.legacy:
            ncall, values = int(e.counts[0]), e.sums.reshape(-1).astype(np.float32)
        else:
            ncall = int((int(e.counts.max()) + chunk_size - 1) // chunk_size)
            count = e.counts.astype(np.float32)[:, None]
            mean = np.where(count > 0, e.sums / np.where(count > 0, count, 1), np.float32(1))
            values = (mean.astype(np.float32) * np.float32(ncall)).reshape(-1)
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size)
        out += values.astype("<f4").tobytes()
    dataset = (imatrix.datasets[-1] if imatrix.datasets else "").encode()
    out += struct.pack("<ii", imatrix.chunk_count, len(dataset)) + dataset
    with atomic_file(path) as tmp:
        tmp.write_bytes(bytes(out))
    return path


# ---------------------------------------------------------------------------------------------------------------
# does it belong to this model?

_LAYER = re.compile(r"^blk\.(\d+)\.")


def check_imatrix_matches(imatrix: Imatrix | Path, model: Path | GGUFFile) -> None:
    """Raise ImatrixMismatchError, naming the first tensor that disagrees, when `imatrix` was not made for the
    GGUF `model` (a path, or a GGUFFile already read): a tensor the model lacks, a column count (or expert
    count) that differs, or model layers the imatrix has no data for at all."""
    from ..gguf.reader import read_gguf

    if not isinstance(imatrix, Imatrix):
        imatrix = read_imatrix(imatrix)
    gguf = read_gguf(model)
    shapes = {t.name: t.shape for t in gguf.header.tensors}
    model = gguf.path
    for name in sorted(imatrix.entries):
        e = imatrix.entries[name]
        shape = shapes.get(name)
        if shape is None:
            raise ImatrixMismatchError(f"the importance matrix has {name}, which {model.name} does not have: it was "
                                       "made for another model")
        n_mat = shape[2] if len(shape) > 2 else 1
        cols_ok = e.sums.size == shape[0] * n_mat if imatrix.legacy else (e.n_cols, e.sums.shape[0]) in (
            (shape[0], n_mat), (shape[0], 1))
        if not cols_ok:
            got = f"{e.n_cols} columns" + (f" × {e.sums.shape[0]} experts" if e.sums.shape[0] > 1 else "")
            want = f"{shape[0]} columns" + (f" × {n_mat} experts" if n_mat > 1 else "")
            raise ImatrixMismatchError(f"{name}: the importance matrix has {got}, {model.name} has {want}: it was "
                                       "made for another model")
    covered = {m.group(1) for name in imatrix.entries if (m := _LAYER.match(name))}
    for name in sorted(shapes, key=_natural):
        m = _LAYER.match(name)
        if m and len(shapes[name]) >= 2 and m.group(1) not in covered and name.endswith(".weight"):
            raise ImatrixMismatchError(f"{name}: the importance matrix has no data for layer {m.group(1)} of "
                                       f"{model.name}: it was made for another model")


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
