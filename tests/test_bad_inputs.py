"""Every bad input gets one clean line on stderr, a non-zero exit code, no traceback and no partial output."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from tests._fixtures.gguf_files import write_tiny_gguf

runner = CliRunner()


def assert_clean_failure(args: list[str], expect: str, code: int = 1) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert expect.lower() in err.lower(), err
    assert result.stdout == ""
    return err


def _bytes(tmp_path: Path, data: bytes, name: str = "bad.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _truncated(src: Path, tmp_path: Path, n: int) -> Path:
    with open(src, "rb") as f:
        return _bytes(tmp_path, f.read(n))


def test_empty_file(tmp_path):
    assert_clean_failure(["inspect", str(_bytes(tmp_path, b""))], "is empty")


def test_random_bytes(tmp_path):
    import os

    assert_clean_failure(["inspect", str(_bytes(tmp_path, os.urandom(4096)))], "not a GGUF file")


def test_text_file(tmp_path):
    assert_clean_failure(["inspect", str(_bytes(tmp_path, b"hello world\n" * 10, "notes.txt"))], "not a GGUF")


def test_missing_file(tmp_path):
    assert_clean_failure(["inspect", str(tmp_path / "nope.gguf")], "does not exist")


def test_folder_instead_of_file(tmp_path):
    assert_clean_failure(["inspect", str(tmp_path)], "is a folder")


def test_magic_only(tmp_path):
    assert_clean_failure(["inspect", str(_bytes(tmp_path, b"GGUF"))], "truncated")


@pytest.mark.slow
def test_truncated_header(smollm2_gguf, tmp_path):
    assert_clean_failure(["inspect", str(_truncated(smollm2_gguf, tmp_path, 100_000))], "truncated")


@pytest.mark.slow
def test_truncated_tensor_data(smollm2_gguf, tmp_path):
    size = smollm2_gguf.stat().st_size
    assert_clean_failure(["inspect", str(_truncated(smollm2_gguf, tmp_path, size - 1000))], "truncated")


def test_unsupported_version(tmp_path):
    data = b"GGUF" + struct.pack("<IQQ", 99, 0, 0)
    assert_clean_failure(["inspect", str(_bytes(tmp_path, data))], "corrupt")


def test_absurd_kv_count(tmp_path):
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40) + b"\0" * 64
    assert_clean_failure(["inspect", str(_bytes(tmp_path, data))], "corrupt")


def test_bad_tensor_type(tmp_path):
    path = write_tiny_gguf(tmp_path / "m.gguf")
    data = bytearray(path.read_bytes())
    name = b"token_embd.weight"
    at = data.index(name) + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    type_at = at + 4 + 8 * n_dims
    struct.pack_into("<I", data, type_at, 250)
    assert_clean_failure(["inspect", str(_bytes(tmp_path, bytes(data)))], "corrupt")


def test_usage_error_exit_code_2():
    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 2


def test_debug_shows_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTKIT_DEBUG", "1")
    result = runner.invoke(app, ["inspect", str(_bytes(tmp_path, b""))])
    assert result.exit_code != 0
    assert result.exception is not None and type(result.exception).__name__ == "NotGGUFError"
