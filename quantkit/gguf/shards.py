"""Split GGUF models as llama.cpp reads them: shards named `<Name>-00001-of-00003.gguf`, each a GGUF of its own
with `split.no` (0-based), `split.count` and `split.tensors.count`; the first shard holds all the metadata, the
others only the split keys, and the tensors are spread over the shards in file order. `read_model_header` takes
any shard and returns the header of the whole model; every GGUF read goes through it (gguf/reader.py)."""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from gguf import Keys

from ..errors import CorruptGGUFError, InputNotFoundError
from .header import GGUFHeader, read_local_header

log = logging.getLogger(__name__)

SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
SPLIT_KEYS = (Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT, Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)


def shard_name(path: Path, no: int, count: int) -> Path:
    """The name of shard `no` (0-based) of `count` for the model file `path`
    (`X-Q8_0.gguf` → `X-Q8_0-00001-of-00003.gguf`)."""
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.gguf')}-{no + 1:05d}-of-{count:05d}.gguf")


def shard_set(path: Path, count: int) -> list[Path]:
    m = SHARD_NAME.match(path.name)
    if m is None or int(m["count"]) != count:
        raise CorruptGGUFError(f"{path} is one of {count} shards of a split model, but its name does not say which",
                               hint="keep the shards' names as they were made: <Name>-00001-of-00003.gguf …")
    return [path.with_name(f"{m['prefix']}-{i + 1:05d}-of-{count:05d}.gguf") for i in range(count)]


def shard_paths(path: str | Path) -> list[Path]:
    """All the files of the model that `path` belongs to: its shards in order, or `[path]` for a single file."""
    return shards_of(path, read_local_header(Path(path)))


def shards_of(path: str | Path, header: GGUFHeader) -> list[Path]:
    """`shard_paths` from a header already read (of `path`, or of the whole model `path` is a shard of)."""
    path = Path(path)
    count = split_count(header)
    return shard_set(path, count) if count > 1 else [path]


def first_shard(path: str | Path) -> Path:
    """The file to give libllama (which loads the other shards itself, and only from the first)."""
    path = Path(path)
    m = SHARD_NAME.match(path.name)
    if m is None or not path.is_file():
        return path
    return shard_paths(path)[0]


def find_shards(path: str | Path) -> list[Path] | None:
    """The complete shard set made from the model file name `path` (`X.gguf` → `X-00001-of-0000N.gguf` …), or
    None when there is none, or not all of it."""
    path = Path(path)
    stem = path.name.removesuffix(".gguf")
    for first in sorted(path.parent.glob(f"{glob_escape(stem)}-00001-of-*.gguf")):
        m = SHARD_NAME.match(first.name)
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


def split_count(header: GGUFHeader) -> int:
    return int(header.get(Keys.Split.LLM_KV_SPLIT_COUNT, 0) or 0)


def read_model_header(path: str | Path) -> GGUFHeader:
    """The header of the model that `path` holds: of the file itself, or — for any shard of a split model — of
    all its shards together (the first shard's metadata, every shard's tensors, their sizes summed). A missing
    or mismatched shard is an error."""
    path = Path(path)
    header = read_local_header(path)
    count = split_count(header)
    if count <= 1:
        return header
    shards = shard_set(path, count)
    headers = []
    for i, shard in enumerate(shards):
        if not shard.is_file():
            raise InputNotFoundError(f"{shard.name} is missing: {path.name} is one of {count} shards of a split model",
                                     hint="put every shard of the model in the same folder")
        h = header if shard == path else read_local_header(shard)
        if int(h.get(Keys.Split.LLM_KV_SPLIT_NO, -1)) != i or split_count(h) != count:
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
