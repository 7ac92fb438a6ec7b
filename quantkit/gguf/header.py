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

from ..errors import CorruptGGUFError, InputNotFoundError, NotGGUFError, RemoteGGUFError

log = logging.getLogger(__name__)

_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
_MAX_COUNT = 1 << 20  # more keys or tensors than this is a corrupt header (real models have < 1,000 tensors)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NAME = 64  # GGML_MAX_NAME: a tensor name has fewer bytes than this
_LAYER = re.compile(r"^blk\.(\d+)\.")
_BLOCK = 1 << 20  # bytes read at once while skipping a string array


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
    """Reads a header front to back. Every length or count the file declares is checked against the bytes left
    in the file before anything is read or allocated for it, so a file claiming 2^40 of something costs nothing."""

    def __init__(self, f: BinaryIO, name: str, size: int | None):
        self.f, self.name, self.pos, self.size = f, name, 0, size

    def corrupt(self, what: str) -> CorruptGGUFError:
        return CorruptGGUFError(f"{self.name} has a corrupt GGUF header: {what}")

    def left(self) -> int | None:
        size = self.size if self.size is not None else getattr(self.f, "file_size", None)  # a remote file's, once known
        return None if size is None else size - self.pos

    def need(self, n: int, what: str) -> None:
        """Refuse a declared length `n` that runs past the end of the file."""
        left = self.left()
        if left is not None and n > left:
            raise CorruptGGUFError(f"{self.name} is truncated or corrupt: {what} at byte {self.pos:,} runs past the "
                                   f"end of the file ({left:,} bytes left)")

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise CorruptGGUFError(f"{self.name} is truncated inside its header (at byte {self.pos + len(data):,})")
        self.pos += n
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def raw_string(self, what: str = "a string") -> bytes:
        n = self.unpack("<Q")
        self.need(n, f"{what} of {n:,} bytes")
        if n > 1 << 24:
            raise self.corrupt(f"{what} of {n:,} bytes")
        return self.read(n)

    def skip_strings(self, n: int, key: str) -> None:
        """Skip `n` strings (a vocabulary: 150,000 of them), each length checked; the hot loop of a parse, so the
        file is read in blocks and the lengths unpacked from them, and the bytes read past the last string are
        given back to the file (one that cannot step back is read a string at a time)."""
        if not self._can_give_back():
            return self._skip_one_by_one(n, key)
        length = struct.Struct("<Q").unpack_from
        left = self.left()
        end = None if left is None else self.pos + left
        buf, at, pos = b"", 0, self.pos
        for _ in range(n):
            if at + 8 > len(buf):
                buf, at = self._refill(buf, at, 8, key)
            (m,) = length(buf, at)
            if m > 1 << 24 or (end is not None and pos + 8 + m > end):
                self.pos = pos + 8
                self.need(m, f"a string of {m:,} bytes in {key}")
                raise self.corrupt(f"a string of {m:,} bytes in {key}")
            if at + 8 + m > len(buf):
                buf, at = self._refill(buf, at, 8 + m, key)
            at += 8 + m
            pos += 8 + m
        self.pos = pos
        if len(buf) > at:
            self._give_back(len(buf) - at)

    def _skip_one_by_one(self, n: int, key: str) -> None:
        read, length = self.f.read, struct.Struct("<Q").unpack
        left = self.left()
        end = None if left is None else self.pos + left
        for _ in range(n):
            (m,) = length(self.read(8))
            if m > 1 << 24 or (end is not None and self.pos + m > end):
                self.need(m, f"a string of {m:,} bytes in {key}")
                raise self.corrupt(f"a string of {m:,} bytes in {key}")
            if len(read(m)) != m:
                raise CorruptGGUFError(f"{self.name} is truncated inside its header (in {key})")
            self.pos += m

    def _can_give_back(self) -> bool:
        if hasattr(self.f, "unread"):
            return True
        seekable = getattr(self.f, "seekable", None)
        return bool(seekable and seekable())

    def _refill(self, buf: bytes, at: int, n: int, key: str) -> tuple[bytes, int]:
        """`buf` from `at` on, with more of the file after it, so that it holds at least `n` bytes."""
        buf = buf[at:]
        while len(buf) < n:
            more = self.f.read(max(_BLOCK, n - len(buf)))
            if not more:
                raise CorruptGGUFError(f"{self.name} is truncated inside its header (in {key})")
            buf += more
        return buf, 0

    def _give_back(self, n: int) -> None:
        unread = getattr(self.f, "unread", None)
        if unread is not None:
            unread(n)
        else:
            self.f.seek(-n, 1)

    def string(self, what: str = "a string") -> str:
        """A string value: gguf.cpp takes any bytes (so does gguf's reader), and so do we."""
        return self.raw_string(what).decode("utf-8", errors="replace")

    def identifier(self, what: str) -> str:
        """A key or a tensor name: what libllama and gguf's reader look things up by. gguf's reader refuses a file
        whose key is not UTF-8; a name not in UTF-8 could match nothing."""
        at = self.pos
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.corrupt(f"{what} at byte {at:,} is not UTF-8 ({raw[:40]!r})") from None


def _value(s: _Stream, key: str, vtype: int) -> tuple[Any, int | None]:
    if vtype == GGUFValueType.STRING:
        return s.string(f"the value of {key}"), None
    if vtype == GGUFValueType.ARRAY:
        itype, n = s.unpack("<I"), s.unpack("<Q")
        if itype == GGUFValueType.STRING:
            s.need(8 * n, f"an array of {n:,} strings ({key})")  # each string holds at least its length
            s.skip_strings(n, key)
            return n, n
        if itype in _SCALARS:
            fmt = _SCALARS[GGUFValueType(itype)]
            size = struct.calcsize(fmt)
            s.need(size * n, f"an array of {n:,} items ({key})")
            raw = s.read(size * n)
            return (list(struct.unpack(f"<{n}{fmt[1]}", raw)) if n <= 4096 else n), n
        what = "nested arrays" if itype == GGUFValueType.ARRAY else f"an array of value type {itype}"
        raise s.corrupt(f"{key} holds {what}, which GGUF does not allow")
    if vtype not in _SCALARS:
        raise s.corrupt(f"{key} has value type {vtype}")
    return s.unpack(_SCALARS[GGUFValueType(vtype)]), None


def parse_header(f: BinaryIO, name: str, file_size: int | None = None) -> GGUFHeader:
    """Parse and validate a GGUF header the way llama.cpp's gguf.cpp does (counts, lengths, types, duplicate
    names, alignment, dimensions, tensor offsets), and check that the file holds all of its tensor data."""
    s = _Stream(f, name, file_size)
    magic = s.f.read(4)
    s.pos = len(magic)
    if magic != GGUF_MAGIC.to_bytes(4, "little"):
        raise NotGGUFError(f"{name} is not a GGUF file (it does not start with the GGUF magic)")
    version = s.unpack("<I")
    if version not in (2, 3):
        raise CorruptGGUFError(f"{name} has a corrupt or unsupported GGUF header (version {version})")
    n_tensors, n_kv = s.unpack("<Q"), s.unpack("<Q")
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise s.corrupt(f"{n_tensors:,} tensors, {n_kv:,} keys")
    kv, kv_bytes, arrays = {}, {}, {}
    for _ in range(n_kv):
        start = s.pos
        key = s.identifier("a key")
        if not key:
            raise s.corrupt(f"a key at byte {start:,} is empty")
        if key in kv:
            raise s.corrupt(f"it has the key {key} twice")
        value, count = _value(s, key, s.unpack("<I"))
        kv[key] = value
        kv_bytes[key] = s.pos - start
        if count is not None:
            arrays[key] = count
    alignment = _alignment(s, kv)
    tensors, offsets, names = [], [], set()
    for _ in range(n_tensors):
        tensor, offset = _tensor_info(s)
        if tensor.name in names:
            raise s.corrupt(f"it has two tensors named {tensor.name}")
        names.add(tensor.name)
        tensors.append(tensor)
        offsets.append(offset)
    header_bytes = -(-s.pos // alignment) * alignment
    header = GGUFHeader(name, version, kv, kv_bytes, tensors, header_bytes, file_size, alignment, arrays)
    expected = 0  # llama.cpp requires each tensor right after the previous one, padded to the alignment
    for t, offset in zip(tensors, offsets):
        if offset != expected:
            raise s.corrupt(f"tensor {t.name} has offset {offset:,} where {expected:,} was expected "
                            "(tensors must follow each other, aligned)")
        expected += padded(tensor_bytes(t.type, t.shape), alignment)
    if file_size is not None and tensors:  # a vocab-only file may end before the alignment padding
        need = header_bytes + sum(padded(tensor_bytes(t.type, t.shape), alignment) for t in tensors[:-1])
        need += tensor_bytes(tensors[-1].type, tensors[-1].shape)
        if need > file_size:
            raise CorruptGGUFError(f"{name} is truncated: its tensors need {need:,} bytes, the file has {file_size:,}")
    return header


def _alignment(s: _Stream, kv: dict[str, Any]) -> int:
    alignment = kv.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1) or alignment >= 1 << 32:
        raise s.corrupt(f"general.alignment {alignment!r} is not a power of two")
    return alignment


def _tensor_info(s: _Stream) -> tuple[HeaderTensor, int]:
    name = s.identifier("a tensor name")
    if len(name.encode()) >= _MAX_NAME:
        raise s.corrupt(f"tensor name {name[:80]!r} is {len(name.encode())} bytes long (ggml allows {_MAX_NAME - 1})")
    n_dims = s.unpack("<I")
    if n_dims > _MAX_DIMS:
        raise s.corrupt(f"tensor {name} has {n_dims} dimensions (at most {_MAX_DIMS})")
    shape = tuple(s.unpack("<Q") for _ in range(n_dims))
    raw_type = s.unpack("<I")
    offset = s.unpack("<Q")
    try:
        ttype = GGMLQuantizationType(raw_type)
    except ValueError:
        raise s.corrupt(f"tensor {name} has type {raw_type}, which ggml does not know") from None
    if 0 in shape:
        raise s.corrupt(f"tensor {name} has a dimension of 0 ({list(shape)})")
    n = 1
    for d in shape:
        n *= d
    if n >= 1 << 63:
        raise s.corrupt(f"tensor {name} is too large ({list(shape)})")
    block, row = GGML_QUANT_SIZES[ttype][0], shape[0] if shape else 1  # no dimensions: one value, as in ggml
    if row % block:
        raise s.corrupt(f"tensor {name} has rows of {row} values, not a multiple of {ttype.name}'s block of {block}")
    return HeaderTensor(name, shape, ttype, offset), offset


def layer_of(name: str) -> int | None:
    """The layer of a GGUF tensor (`blk.N.…` → N); None for the tensors outside the layers."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def tensor_bytes(ttype: GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    block, size = GGML_QUANT_SIZES[ttype]
    rows = 1
    for d in shape[1:]:
        rows *= d
    return rows * ((shape[0] if shape else 1) // block) * size


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

    def unread(self, n: int) -> None:
        """Step back over the last `n` bytes read (still held: a fetch keeps the bytes from `pos` on)."""
        if n > self.pos:
            raise ValueError("cannot step back past the bytes held")
        self.pos -= n


def read_remote_header(url: str, headers: dict[str, str] | None = None) -> GGUFHeader:
    reader = _RangeReader(url, headers or {})
    header = parse_header(reader, url)  # type: ignore[arg-type]
    header.file_size = reader.file_size
    log.info("read the header of %s: %d tensors, %.1f MiB fetched", url, len(header.tensors), reader.bytes_read / 2**20)
    return header
