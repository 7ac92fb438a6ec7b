"""`quantkit convert` through the real CLI: the ladder, skipping finished outputs, --json, and bad inputs that
each end in one clean line, exit code 1 and nothing half-written."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantkit.cli.app import app
from quantkit.quant_types import LADDER
from reference.tiny import tiny_checkpoint

pytestmark = pytest.mark.slow
runner = CliRunner()


def _convert(*args: str):
    return runner.invoke(app, ["convert", *args])


def assert_clean_failure(args: list[str], expect: str, out: Path | None = None, code: int = 1) -> None:
    result = _convert(*args)
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expect.lower() in err.lower(), err
    if out is not None and out.exists():
        assert sorted(p.name for p in out.iterdir()) == [], "something was left behind"


def _generate(path: Path) -> str:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=64, n_threads=2, verbose=False)
    return llm("<｜User｜>Hi<｜Assistant｜>", max_tokens=4, temperature=0.0)["choices"][0]["text"]


# ---------------------------------------------------------------------------------------------------------------
# the ladder


def test_ladder_json_skip_and_force(tmp_path):
    src, out = tiny_checkpoint("qwen2"), tmp_path / "out"
    result = _convert(str(src), "-o", str(out), "-t", "Q4_K_M,Q8_0", "-t", "q4_k_m", "--json")
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert [f["type"] for f in files] == ["BF16", "Q4_K_M", "Q8_0"]  # auto keeps bf16; duplicates dropped
    assert [Path(f["path"]).name for f in files] == [f"tiny-qwen2-v1-{t}.gguf" for t in ("BF16", "Q4_K_M", "Q8_0")]
    assert all(f["made"] for f in files)
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f["path"]).name for f in files)
    for f in files:
        assert Path(f["path"]).stat().st_size == f["n_bytes"]

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = json.loads(_convert(str(src), "-o", str(out), "-t", "Q8_0", "--json").stdout)["files"]
    assert [f["made"] for f in again] == [False, False]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    # a file that looks finished but is not (truncated) is redone, and --force redoes a good one
    q8 = out / "tiny-qwen2-v1-Q8_0.gguf"
    q8.write_bytes(q8.read_bytes()[: q8.stat().st_size // 2])
    redone = json.loads(_convert(str(src), "-o", str(out), "-t", "Q8_0", "--json").stdout)["files"]
    assert [f["made"] for f in redone] == [False, True]
    forced = json.loads(_convert(str(src), "-o", str(out), "-t", "Q8_0", "--force", "--json").stdout)["files"]
    assert [f["made"] for f in forced] == [True, True]


@pytest.fixture
def no_weight_repacking(monkeypatch):
    """llama.cpp's CPU weight repacking (extra buffer types: AMX / repacked Q4_0, Q8_0, Q4_K) crashes with a
    segfault on these tiny shapes on AMX machines — with llama.cpp's own converter's files too. It is a
    runtime choice, not part of the file, so the ladder is checked with it off."""
    import llama_cpp.llama as llama_module

    default = llama_module.llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    monkeypatch.setattr(llama_module.llama_cpp, "llama_model_default_params", params)


def test_whole_ladder_loads_and_generates(tmp_path, no_weight_repacking):
    out = tmp_path / "out"
    result = _convert(str(tiny_checkpoint("llama")), "-o", str(out), "-t", "all", "--outtype", "F16", "--json")
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert [f["type"] for f in files] == ["F16", *LADDER]
    for f in files:
        assert isinstance(_generate(Path(f["path"])), str), f["type"]


# ---------------------------------------------------------------------------------------------------------------
# bad inputs


def _copy_checkpoint(tmp_path: Path, family: str = "qwen2", weights: bool = True) -> Path:
    dst = tmp_path / "ckpt"
    dst.mkdir()
    for f in tiny_checkpoint(family).iterdir():
        if f.name.startswith("."):
            continue
        if f.suffix == ".safetensors":
            if weights:
                (dst / f.name).symlink_to(f)
        else:
            shutil.copy(f, dst / f.name)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_missing_config(tmp_path):
    ckpt = _copy_checkpoint(tmp_path)
    (ckpt / "config.json").unlink()
    assert_clean_failure([str(ckpt), "-o", str(tmp_path / "out")], "no config.json", tmp_path / "out")


def test_unknown_architecture(tmp_path):
    ckpt = _copy_checkpoint(tmp_path)
    _edit_config(ckpt, architectures=["GPT2LMHeadModel"])
    assert_clean_failure([str(ckpt), "-o", str(tmp_path / "out")], "'GPT2LMHeadModel' is not supported",
                         tmp_path / "out")


def test_corrupt_safetensors_header(tmp_path):
    ckpt = _copy_checkpoint(tmp_path, weights=False)
    (ckpt / "model.safetensors").write_bytes((40).to_bytes(8, "little") + b'{"a": not json at all ........}' + b"\0" * 64)
    assert_clean_failure([str(ckpt), "-o", str(tmp_path / "out")], "header is not valid JSON", tmp_path / "out")
    (ckpt / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    assert_clean_failure([str(ckpt), "-o", str(tmp_path / "out")], "does not fit", tmp_path / "out")


def test_shape_mismatch_with_config(tmp_path):
    ckpt = _copy_checkpoint(tmp_path)
    _edit_config(ckpt, intermediate_size=384)
    assert_clean_failure([str(ckpt), "-o", str(tmp_path / "out")], "has shape [128, 320] but config.json implies [128, 384]",
                         tmp_path / "out")


def test_pickle_only_checkpoint_is_refused(tmp_path):
    ckpt = _copy_checkpoint(tmp_path, weights=False)
    (ckpt / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    assert_clean_failure([str(ckpt), "-o", str(tmp_path / "out")], "pickle", tmp_path / "out")


def test_unknown_quant_type(tmp_path):
    assert_clean_failure([str(tiny_checkpoint("qwen2")), "-o", str(tmp_path / "out"), "-t", "Q9_K"],
                         "unknown quant type 'Q9_K'", tmp_path / "out")


def test_type_needing_imatrix_fails_before_any_work(tmp_path):
    assert_clean_failure([str(tiny_checkpoint("qwen2")), "-o", str(tmp_path / "out"), "-t", "IQ2_XS"],
                         "importance matrix", tmp_path / "out")


def test_unknown_source(tmp_path):
    assert_clean_failure([str(tmp_path / "no-such-folder"), "-o", str(tmp_path / "out")], "neither a folder")


def test_full_disk_before_writing(tmp_path, monkeypatch):
    import shutil as sh

    out = tmp_path / "out"
    monkeypatch.setattr("quantkit.files.shutil.disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9, 1 << 20))
    assert_clean_failure([str(tiny_checkpoint("qwen2")), "-o", str(out)], "not enough disk space", out)


def test_disk_fills_up_mid_write(tmp_path, monkeypatch):
    from quantkit.convert import writer

    real = writer._write_data

    def write_then_fail(fd, pos, alignment, plans, *rest):
        real(fd, pos, alignment, plans[:3], *rest)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write_data", write_then_fail)
    out = tmp_path / "out"
    assert_clean_failure([str(tiny_checkpoint("qwen2")), "-o", str(out)], "disk filled up", out)


def test_read_only_output(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    with read_only(out):
        assert_clean_failure([str(tiny_checkpoint("qwen2")), "-o", str(out)], "cannot write", out)


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder nobody may write into: mode 555, and, for root (who ignores modes, as CI runs), the
    immutable attribute where the file system has it."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):
            chattr = shutil.which("chattr")
            immutable = chattr is not None and subprocess.run([chattr, "+i", str(folder)],
                                                               capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("running as root on a file system without the immutable attribute")
        yield
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr"), "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_output_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_clean_failure([str(tiny_checkpoint("qwen2")), "-o", str(tmp_path / "file")], "not a folder")


def test_killed_mid_write_leaves_nothing_final_and_the_next_run_cleans_up(tmp_path):
    """SIGKILL while the base is being written (its `.NAME.partial-PID` exists): no file under the final name;
    the next `quantkit convert` removes the dead process's temporary and writes the same bytes as a run that was
    never interrupted."""
    import signal
    import sys
    import time

    from quantkit.convert import convert
    from quantkit.convert.embedded import embedded_checkpoint

    source = embedded_checkpoint()  # 135M parameters: its F16 takes long enough to write to be caught mid-way
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "quantkit", "convert", str(source), "--outtype", "F16", "-o",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (temporaries := list(out.glob(f".*.gguf.partial-{proc.pid}")) if out.is_dir() else []):
            assert proc.poll() is None, "convert ended before it could be killed"
            assert time.monotonic() < deadline, "no temporary after 180 s"
            time.sleep(0.005)
    finally:  # killed even when an assertion above failed
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    [temporary] = temporaries
    assert temporary.exists(), "the kill did not land while the temporary was there"
    final = out / temporary.name[1:].rsplit(".partial-", 1)[0]
    assert not final.exists()

    result = _convert(str(source), "--outtype", "F16", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [final.name]  # the dead run's temporary is gone
    reference = convert(source, tmp_path / "reference", outtype="F16").base.path
    assert reference.name == final.name and reference.read_bytes() == final.read_bytes()


def test_threads_reach_the_encoder(tmp_path, monkeypatch):
    """`--threads 3` is the pool's size; 0 is a usage error before anything is made."""
    from quantkit.convert import chunks

    sizes = []
    real = chunks.ChunkPool.__init__

    def record(self, fd, threads, advance):
        sizes.append(threads)
        real(self, fd, threads, advance)

    monkeypatch.setattr(chunks.ChunkPool, "__init__", record)
    result = _convert(str(tiny_checkpoint("qwen2")), "--outtype", "F16", "--threads", "3", "-o", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    assert sizes == [3]
    result = _convert(str(tiny_checkpoint("qwen2")), "--threads", "0", "-o", str(tmp_path / "b"))
    assert result.exit_code == 2 and not (tmp_path / "b").exists()
