"""`quantkit export` refuses bad inputs with one clean line, exit code 1 (2 for usage), and leaves nothing behind;
and `embedded_checkpoint()` exports once, then comes from the cache."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from quantkit.errors import OutputError
from tests._fixtures.gguf_files import write_tiny_gguf
from tests._fixtures.tiny_gguf_models import TinyShape, reduced_vocab_gguf, write_tiny_model
from tests.test_bad_inputs import assert_clean_failure, runner
from quantkit.cli.app import app

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "tiny.gguf"
    write_tiny_model(path, "llama", reduced_vocab_gguf("llama-bpe"), TinyShape(n_layer=1))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_it_works_through_the_cli(model, tmp_path):
    result = runner.invoke(app, ["export", str(model), str(tmp_path / "out"), "--dtype", "f16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_tensors"] == 12 and report["dtype"] == "f16"  # 9 per layer + embeddings, norm, output
    assert sorted(report["files"]) == sorted(p.name for p in (tmp_path / "out").iterdir())


def test_unknown_architecture(tmp_path):
    path = write_tiny_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    err = assert_clean_failure(["export", str(path), str(tmp_path / "out")], "architecture 'gpt2'")
    assert "llama" in err and "qwen2" in err
    assert not (tmp_path / "out").exists()


def test_out_dir_under_a_regular_file(model, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_clean_failure(["export", str(model), str(tmp_path / "file" / "out")], "is not a folder")
    assert (tmp_path / "file").read_text() == "x"


def test_out_dir_is_a_regular_file(model, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_clean_failure(["export", str(model), str(tmp_path / "file")], "not a folder")
    assert (tmp_path / "file").read_text() == "x"


def test_existing_non_empty_out_dir_needs_force(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_clean_failure(["export", str(model), str(out)], "not empty")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    result = runner.invoke(app, ["export", str(model), str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()


def test_existing_empty_out_dir_is_fine(model, tmp_path):
    (tmp_path / "out").mkdir()
    result = runner.invoke(app, ["export", str(model), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output


def test_bad_dtype(model, tmp_path):
    assert_clean_failure(["export", str(model), str(tmp_path / "out"), "--dtype", "int8"], "unknown dtype")
    assert not (tmp_path / "out").exists()


def test_missing_arguments_is_a_usage_error():
    assert runner.invoke(app, ["export"]).exit_code == 2


def test_truncated_gguf(model, tmp_path):
    data = model.read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[: len(data) - 4096])
    assert_clean_failure(["export", str(bad), str(tmp_path / "out")], "truncated")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["/sys/quantkit-export-test/out", "/sys/quantkit-export-test"])
def test_destination_that_cannot_be_written(model, where):
    # permissions do not stop root; sysfs refuses new entries to everyone (EPERM)
    assert_clean_failure(["export", str(model), where], "not permitted" if where.count("/") == 2 else "cannot")
    assert not Path(where).exists()


def test_not_enough_disk_space(model, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    assert_clean_failure(["export", str(model), str(tmp_path / "out")], "not enough disk space")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_failure_midway_leaves_nothing(model, tmp_path, monkeypatch):
    import quantkit.convert.export.safetensors as st

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "encode", broken)
    assert_clean_failure(["export", str(model), str(tmp_path / "out")], "disk filled up")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_interrupt_leaves_nothing(model, tmp_path, monkeypatch):
    import quantkit.convert.export.safetensors as st
    from quantkit.convert.export import export_gguf

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_embedded_checkpoint_is_exported_once(smollm2_gguf, monkeypatch):
    import quantkit.convert.export
    from quantkit.convert.embedded import embedded_checkpoint

    first = embedded_checkpoint()
    assert (first / "config.json").exists() and (first / "model.safetensors").exists()
    assert '"torch_dtype": "float32"' in (first / "config.json").read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError("embedded_checkpoint exported again")

    monkeypatch.setattr(quantkit.convert.export, "export_gguf", must_not_run)
    assert embedded_checkpoint() == first


def test_output_error_is_typed(model, tmp_path):
    from quantkit.convert.export import export_gguf

    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(OutputError):
        export_gguf(model, out)
