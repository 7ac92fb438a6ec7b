"""The GGUF header parser's checks on keys and names: a key or tensor name that is not UTF-8 is refused by every
reader (gguf's own reader refuses such a key; such a name can match nothing), an empty key and a tensor name of
64 bytes or more are refused (gguf.cpp refuses them), while string values take any bytes, as in gguf.cpp and
gguf's reader."""
from __future__ import annotations

import io
import struct

import pytest
from gguf import GGUFReader

from quantkit.errors import CorruptGGUFError
from quantkit.gguf.header import parse_header, read_local_header
from quantkit.gguf.info import inspect_gguf
from quantkit.gguf.reader import open_gguf, read_header
from quantkit.memory import estimate_memory
from tests._fixtures import gguf_bytes as G

NOT_UTF8 = b"general.\xff\xfename"


def _kv(key: bytes, vtype: int = G.VT.UINT32, value=1) -> bytes:
    return G.string(key) + struct.pack("<I", vtype) + G.value(vtype, value)


def _arch() -> bytes:
    return G.kv("general.architecture", G.VT.STRING, "llama")


def _parse(data: bytes):
    return parse_header(io.BytesIO(data), "m.gguf", len(data))


def test_a_key_that_is_not_utf8_is_refused():
    with pytest.raises(CorruptGGUFError, match=r"a key at byte 69 is not UTF-8 \(b'general\.\\xff\\xfename'\)"):
        _parse(G.build([_arch(), _kv(NOT_UTF8)]).data)


def test_a_tensor_name_that_is_not_utf8_is_refused():
    with pytest.raises(CorruptGGUFError, match="a tensor name at byte .* is not UTF-8"):
        _parse(G.build(tensors=[G.Tensor(b"blk.0.\xc3(.weight", (8,))]).data)


def test_an_empty_key_is_refused():
    with pytest.raises(CorruptGGUFError, match="a key at byte 69 is empty"):
        _parse(G.build([_arch(), _kv(b"")]).data)


def test_tensor_names_have_fewer_than_64_bytes():
    assert _parse(G.build(tensors=[G.Tensor("é" * 31 + "a", (8,))]).data).tensors[0].name == "é" * 31 + "a"
    with pytest.raises(CorruptGGUFError, match="is 64 bytes long"):
        _parse(G.build(tensors=[G.Tensor("é" * 32, (8,))]).data)


def test_a_string_value_takes_any_bytes():
    header = _parse(G.build([_arch(), _kv(b"general.name", G.VT.STRING, b"caf\xe9")]).data)
    assert header.get("general.name") == "caf\ufffd"


def test_our_rule_is_gguf_readers_rule(tmp_path):
    """gguf's reader (export, quantize's measuring) refuses the key and takes the value; so do we, first."""
    bad_key, bad_value = tmp_path / "key.gguf", tmp_path / "value.gguf"
    bad_key.write_bytes(G.build([_arch(), _kv(NOT_UTF8)]).data)
    bad_value.write_bytes(G.build([_arch(), _kv(b"general.name", G.VT.STRING, b"caf\xe9")]).data)
    with pytest.raises(UnicodeDecodeError):
        GGUFReader(bad_key)
    GGUFReader(bad_value)
    read_local_header(bad_value)


@pytest.mark.parametrize("read", [read_local_header, read_header, open_gguf, inspect_gguf,
                                  lambda p: estimate_memory(str(p))],
                         ids=["read_local_header", "read_header", "open_gguf", "inspect_gguf", "estimate_memory"])
def test_every_reader_refuses_a_key_that_is_not_utf8(read, tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(G.build([_arch(), _kv(NOT_UTF8)]).data)
    with pytest.raises(CorruptGGUFError, match="not UTF-8"):
        read(path)
