"""Reading only the header of a GGUF file: key/values and tensor infos, never the tensor data.

It is quantkit's fast path for everything that needs a file's shape and metadata (inspect, validation, the
memory estimate): gguf's GGUFReader builds an object per token string and takes seconds on a 150k vocabulary,
this parser skips string arrays and takes a fraction of a second.

The same parser reads a local file and a remote one; the remote one is fetched with HTTP range requests in
growing blocks, so a 40 GB file on the Hub costs a few MB.
"""
from __future__ import annotations

import logging
import re
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from .errors import CorruptGGUFError, InputNotFoundError, NotGGUFError, RemoteGGUFError

log = logging.getLogger(__name__)

_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
_MAX_COUNT = 1 << 32  # more keys, tensors or array items than this is a corrupt header
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class HeaderTensor:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    type: GGMLQuantizationType
    offset: int = 0  # of its data, from the start of the file's data section

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFHeader:
    source: str
    version: int
    kv: dict[str, Any]  # scalars as values; arrays as lists of scalars, string arrays as their length only
    kv_bytes: dict[str, int]  # bytes each key/value takes in the header
    tensors: list[HeaderTensor]
    header_bytes: int  # up to the start of the tensor data (padded)
    file_size: int | None = None
    alignment: int = GGUF_DEFAULT_ALIGNMENT
    arrays: dict[str, int] = field(default_factory=dict)  # array keys → item count

    def get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)

    def arch(self, suffix: str, default: Any = None) -> Any:
        return self.kv.get(f"{self.kv.get('general.architecture', '')}.{suffix}", default)


class _Stream:
    def __init__(self, f: BinaryIO, name: str):
        self.f, self.name, self.pos = f, name, 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise CorruptGGUFError(f"{self.name} is truncated inside its header (at byte {self.pos + len(data):,})")
        self.pos += n
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 24:
            raise CorruptGGUFError(f"{self.name} has a corrupt header (a string of {n:,} bytes)")
        return self.read(n).decode("utf-8", errors="replace")


def _value(s: _Stream, vtype: int) -> tuple[Any, int | None]:
    try:
        vtype = GGUFValueType(vtype)
    except ValueError:
        raise CorruptGGUFError(f"{s.name} has a corrupt header (value type {vtype})") from None
    if vtype == GGUFValueType.STRING:
        return s.string(), None
    if vtype == GGUFValueType.ARRAY:
        itype, n = s.unpack("<I"), s.unpack("<Q")
        if n > _MAX_COUNT:
            raise CorruptGGUFError(f"{s.name} has a corrupt header (an array of {n:,} items)")
        if itype == GGUFValueType.STRING:
            for _ in range(n):
                s.read(s.unpack("<Q"))
            return n, n
        if itype in _SCALARS:
            fmt = _SCALARS[GGUFValueType(itype)]
            size = struct.calcsize(fmt)
            raw = s.read(size * n)
            return (list(struct.unpack(f"<{n}{fmt[1]}", raw)) if n <= 4096 else n), n
        items = [_value(s, itype)[0] for _ in range(n)]
        return items, n
    return s.unpack(_SCALARS[vtype]), None


def parse_header(f: BinaryIO, name: str, file_size: int | None = None) -> GGUFHeader:
    s = _Stream(f, name)
    magic = s.f.read(4)
    s.pos = 4
    if magic != GGUF_MAGIC.to_bytes(4, "little"):
        raise NotGGUFError(f"{name} is not a GGUF file (it does not start with the GGUF magic)")
    version = s.unpack("<I")
    if version not in (2, 3):
        raise CorruptGGUFError(f"{name} has a corrupt or unsupported GGUF header (version {version})")
    n_tensors, n_kv = s.unpack("<Q"), s.unpack("<Q")
    if n_tensors > 1 << 20 or n_kv > 1 << 20:
        raise CorruptGGUFError(f"{name} has a corrupt GGUF header ({n_tensors:,} tensors, {n_kv:,} keys)")
    kv, kv_bytes, arrays = {}, {}, {}
    for _ in range(n_kv):
        start = s.pos
        key = s.string()
        value, count = _value(s, s.unpack("<I"))
        kv[key] = value
        kv_bytes[key] = s.pos - start
        if count is not None:
            arrays[key] = count
    tensors = []
    for _ in range(n_tensors):
        tname = s.string()
        n_dims = s.unpack("<I")
        if n_dims > 4:
            raise CorruptGGUFError(f"{name} has a corrupt tensor info ({tname}: {n_dims} dimensions)")
        shape = tuple(s.unpack("<Q") for _ in range(n_dims))
        raw_type = s.unpack("<I")
        offset = s.unpack("<Q")
        try:
            ttype = GGMLQuantizationType(raw_type)
        except ValueError:
            raise CorruptGGUFError(f"{name} has a corrupt tensor info ({tname}: type {raw_type})") from None
        tensors.append(HeaderTensor(tname, shape, ttype, offset))
    alignment = int(kv.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
    header_bytes = -(-s.pos // alignment) * alignment
    header = GGUFHeader(name, version, kv, kv_bytes, tensors, header_bytes, file_size, alignment, arrays)
    if file_size is not None and tensors:  # a vocab-only file may end before the alignment padding
        need = header_bytes + sum(padded(tensor_bytes(t.type, t.shape), alignment) for t in tensors[:-1])
        need += tensor_bytes(tensors[-1].type, tensors[-1].shape)
        if need > file_size:
            raise CorruptGGUFError(f"{name} is truncated: its tensors need {need:,} bytes, the file has {file_size:,}")
    return header


def layer_of(name: str) -> int | None:
    """The layer of a GGUF tensor (`blk.N.…` → N); None for the tensors outside the layers."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def tensor_bytes(ttype: GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    block, size = GGML_QUANT_SIZES[ttype]
    rows = 1
    for d in shape[1:]:
        rows *= d
    return rows * (shape[0] // block) * size


def padded(n: int, alignment: int = GGUF_DEFAULT_ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


def read_local_header(path: Path) -> GGUFHeader:
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist")
    if path.is_dir():
        raise NotGGUFError(f"{path} is a folder, not a GGUF file")
    size = path.stat().st_size
    if size == 0:
        raise NotGGUFError(f"{path} is empty")
    with open(path, "rb") as f:
        return parse_header(f, str(path), size)


class _RangeReader:
    """A forward-only file over HTTP range requests, fetching blocks that double in size (1 MiB first)."""

    def __init__(self, url: str, headers: dict[str, str]):
        self.url, self.headers = url, headers
        self.buf, self.pos, self.block = b"", 0, 1 << 20
        self.fetched = 0  # file offset of the end of buf
        self.file_size: int | None = None
        self.bytes_read = 0

    def _fetch(self) -> bytes:
        start = self.fetched
        req = urllib.request.Request(self.url, headers={**self.headers, "Range": f"bytes={start}-{start + self.block - 1}"})
        try:
            resp = urllib.request.urlopen(req, timeout=30)
        except urllib.error.HTTPError as e:
            if e.code == 416:
                return b""
            raise RemoteGGUFError(f"{self.url}: HTTP {e.code} {e.reason}",
                                  hint="check the URL (and your access to the repo)") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RemoteGGUFError(f"cannot reach {self.url}: {reason}", hint="check the URL and your network") from None
        with resp:
            if resp.status != 206:
                raise RemoteGGUFError(f"{self.url}: the server does not support range requests (it sent the whole file)")
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit():
                self.file_size = int(total)
            data = resp.read()
        self.bytes_read += len(data)
        self.fetched += len(data)
        self.block = min(self.block * 2, 64 << 20)
        return data

    def read(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            more = self._fetch()
            if not more:
                break
            self.buf, self.pos = self.buf[self.pos:] + more, 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def read_remote_header(url: str, headers: dict[str, str] | None = None) -> GGUFHeader:
    reader = _RangeReader(url, headers or {})
    header = parse_header(reader, url)  # type: ignore[arg-type]
    header.file_size = reader.file_size
    log.info("read the header of %s: %d tensors, %.1f MiB fetched", url, len(header.tensors), reader.bytes_read / 2**20)
    return header
