"""Split GGUF models (llama.cpp's shard format): `split_gguf` and `convert --split-max-size/--split-max-tensors`
make shards whose tensors are byte for byte the single file's; every reader takes any shard; libllama loads them
and scores the same perplexity as on the single file."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from typer.testing import CliRunner

from quantkit.gguf import shards as gguf_shards, split
from quantkit.cli.app import app
from quantkit.errors import CorruptGGUFError, InputNotFoundError
from quantkit.gguf.reader import open_gguf, read_header
from quantkit.gguf.header import read_local_header, tensor_bytes

runner = CliRunner()


def _write(path: Path, n_tensors: int = 7) -> Path:
    """A GGUF with tensors of several types and sizes, and metadata of every kind (string array included)."""
    w = GGUFWriter(path, "llama")
    w.add_block_count(n_tensors)
    w.add_string("general.name", "Tiny Split")
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_array("tokenizer.ggml.scores", [0.5, 1.5, 2.5])
    w.add_float32("llama.rope.freq_base", 10000.0)
    rng = np.random.default_rng(0)
    for i in range(n_tensors):
        dtype = (np.float32, np.float16)[i % 2]
        w.add_tensor(f"blk.{i}.w", rng.standard_normal((3 + i, 32)).astype(dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _tensor_bytes(paths: list[Path]) -> dict[str, bytes]:
    """Each tensor's data, found through the file's own offsets (gguf's reader is slow on a 128k vocabulary)."""
    out = {}
    for p in paths:
        header = read_local_header(p)
        with open(p, "rb") as f:
            for t in header.tensors:
                f.seek(header.header_bytes + t.offset)
                out[t.name] = f.read(tensor_bytes(t.type, t.shape))
    return out


def _metadata(path: Path) -> dict[str, bytes]:
    """Each key's packed value as the file holds it, but the split keys."""
    raw = split._raw_kv(Path(path), read_local_header(path))
    return {k: v for k, v in raw.items() if not k.startswith("split.")}


def test_split_by_tensor_count(tmp_path):
    single = _write(tmp_path / "single.gguf")
    model = shutil.copy(single, tmp_path / "Tiny-F32.gguf")
    shards = split.split_gguf(model, max_tensors=3)
    assert [s.name for s in shards] == [f"Tiny-F32-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert not Path(model).exists() and sorted(tmp_path.iterdir()) == sorted([single, *shards])
    assert _tensor_bytes(shards) == _tensor_bytes([single])
    by_gguf = lambda paths: {t.name: t.data.tobytes() for p in paths for t in GGUFReader(p).tensors}  # noqa: E731
    assert by_gguf(shards) == by_gguf([single])  # gguf's own reader agrees
    assert [len(GGUFReader(s).tensors) for s in shards] == [3, 3, 1]
    for i, s in enumerate(shards):
        kv = {k: f.contents() for k, f in GGUFReader(s).fields.items()}
        assert (kv["split.no"], kv["split.count"], kv["split.tensors.count"]) == (i, 3, 7)
    assert _metadata(shards[0]) == _metadata(single)  # the first shard carries all the metadata, byte for byte
    assert set(_metadata(shards[1])) == set()  # the others only the split keys (GGUFReader adds none else)
    for s in shards:  # any shard gives the whole model
        header = read_header(s)
        assert [t.name for t in header.tensors] == [t.name for t in read_local_header(single).tensors]
        assert header.file_size == sum(p.stat().st_size for p in shards)
    reader = open_gguf(shards[2])
    assert {t.name: bytes(t.data.tobytes()) for t in reader.tensors} == _tensor_bytes([single])
    # made again (--force) and cut otherwise: the shards of the earlier cut go
    again = split.split_gguf(shutil.copy(single, tmp_path / "Tiny-F32.gguf"), max_tensors=4)
    assert sorted(tmp_path.iterdir()) == sorted([single, *again]) and len(again) == 2


def test_split_by_size_and_limits(tmp_path):
    single = _write(tmp_path / "single.gguf")
    sizes = [t.n_bytes for t in GGUFReader(single).tensors]
    model = shutil.copy(single, tmp_path / "M.gguf")
    shards = split.split_gguf(model, max_size=sizes[0] + sizes[1])
    counts = [len(GGUFReader(s).tensors) for s in shards]
    assert sum(counts) == 7 and len(shards) > 2
    for s in shards:  # each shard holds at most max_size bytes of tensor data, or a single tensor
        n = [t.n_bytes for t in GGUFReader(s).tensors]
        assert sum(n) <= sizes[0] + sizes[1] or len(n) == 1
    assert _tensor_bytes(shards) == _tensor_bytes([single])
    assert split.split_gguf(shards[0], max_tensors=1) == shards  # already split: left as it is
    fits = shutil.copy(single, tmp_path / "fits.gguf")
    assert split.split_gguf(fits, max_size=10**9) == [Path(fits)]  # fits in one: untouched


def test_split_is_atomic(tmp_path, monkeypatch):
    model = _write(tmp_path / "A-Q8_0.gguf")
    before = model.read_bytes()
    calls = []

    def failing_copy(*args):
        calls.append(args)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(*args)

    real = split._copy
    monkeypatch.setattr(split, "_copy", failing_copy)
    with pytest.raises(OSError):
        split.split_gguf(model, max_tensors=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A-Q8_0.gguf"]  # no shard, no temporary
    assert model.read_bytes() == before


def test_missing_or_renamed_shard(tmp_path):
    shards = split.split_gguf(_write(tmp_path / "B.gguf"), max_tensors=3)
    shards[1].unlink()
    with pytest.raises(InputNotFoundError, match="B-00002-of-00003.gguf is missing"):
        read_header(shards[0])
    result = runner.invoke(app, ["inspect", str(shards[2])])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "missing" in result.stderr
    renamed = shards[0].rename(tmp_path / "renamed.gguf")
    with pytest.raises(CorruptGGUFError, match="name does not say"):
        read_header(renamed)


@pytest.mark.slow
def test_convert_split_cli(tmp_path):
    """`convert --split-max-size`: base and rung in shards with the single files' tensor bytes; a re-run keeps
    them; inspect and estimate-memory read any shard."""
    from reference.tiny import tiny_checkpoint

    ckpt = tiny_checkpoint("llama")
    single, out = tmp_path / "single", tmp_path / "split"
    assert runner.invoke(app, ["convert", str(ckpt), "-o", str(single), "-t", "Q8_0", "--threads", "1"]).exit_code == 0
    args = ["convert", str(ckpt), "-o", str(out), "-t", "Q8_0", "--threads", "1", "--split-max-size", "20M", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    for f in files:
        name = Path(f["path"]).name
        assert re.search(r"-(BF16|Q8_0)-00001-of-0000[2-9]\.gguf$", name), name
        shards = gguf_shards.shard_paths(f["path"])
        assert len(shards) >= 2 and f["n_bytes"] == sum(p.stat().st_size for p in shards)
        whole = single / (name.rsplit("-", 3)[0] + ".gguf")
        assert _tensor_bytes(shards) == _tensor_bytes([whole])
        assert _metadata(shards[0]) == _metadata(whole)
    again = json.loads(runner.invoke(app, args).stdout)["files"]
    assert [f["made"] for f in again] == [False, False] and [f["path"] for f in again] == [f["path"] for f in files]
    last = gguf_shards.shard_paths(files[1]["path"])[-1]
    info = json.loads(runner.invoke(app, ["inspect", str(last), "--json"]).stdout)
    whole_info = json.loads(runner.invoke(app, ["inspect", str(single / Path(last).name.rsplit("-", 3)[0])
                                                + ".gguf", "--json"]).stdout)
    assert info["n_shards"] >= 2 and info["n_tensors"] == whole_info["n_tensors"]
    assert info["n_params"] == whole_info["n_params"] and info["bits_per_weight"] == whole_info["bits_per_weight"]
    mem = runner.invoke(app, ["estimate-memory", str(last), "--ctx", "512", "--json"])
    mem_whole = runner.invoke(app, ["estimate-memory", str(single / (Path(last).name.rsplit("-", 3)[0] + ".gguf")),
                                    "--ctx", "512", "--json"])
    assert mem.exit_code == 0, mem.output
    strip = lambda d: {k: v for k, v in json.loads(d).items() if k not in ("target", "source", "name")}  # noqa: E731
    assert strip(mem.stdout) == strip(mem_whole.stdout)


@pytest.mark.slow
def test_split_smollm2_loads_and_scores_the_same(smollm2_gguf, tmp_path):
    """SmolLM2 in four shards: the same tensor bytes, the same perplexity to the last bit, from any shard; chat
    takes a shard."""
    from quantkit.measure.texts import dataset_path, read_text
    from quantkit.measure.perplexity import Settings, perplexity

    model = shutil.copy(smollm2_gguf, tmp_path / "SmolLM2-Q4_1.gguf")
    shards = split.split_gguf(model, max_size=30 * 10**6)
    assert len(shards) == 4
    assert _tensor_bytes(shards) == _tensor_bytes([smollm2_gguf])
    text = read_text(dataset_path("python-docs"))
    settings = Settings(n_ctx=128, chunks=2, threads=1, n_gpu_layers=0)
    whole, from_first, from_third = perplexity([smollm2_gguf, shards[0], shards[2]], text, settings)
    assert whole.ppl == from_first.ppl == from_third.ppl and whole.ppl_err == from_third.ppl_err
    assert from_third.kl.same_top == 1.0 and from_third.kl.mean_kld < 1e-8  # same logits (KLD: top-k rounding)
    assert from_third.file_size == sum(p.stat().st_size for p in shards)
    result = runner.invoke(app, ["chat", str(shards[1]), "--prompt", "Hi", "-n", "4", "--threads", "1",
                                 "--temperature", "0", "--json"])
    single = runner.invoke(app, ["chat", str(smollm2_gguf), "--prompt", "Hi", "-n", "4", "--threads", "1",
                                 "--temperature", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] == json.loads(single.stdout)["answer"]


def test_export_reads_every_shard(tmp_path):
    """`export` of a split model writes the same checkpoint, byte for byte, as of the single file."""
    from quantkit.convert.export import export_gguf
    from tests._fixtures.tiny_gguf_models import TinyShape, reduced_vocab_gguf, write_tiny_model

    single = tmp_path / "tiny.gguf"
    write_tiny_model(single, "llama", reduced_vocab_gguf("llama-bpe"), TinyShape())
    shards = split.split_gguf(shutil.copy(single, tmp_path / "Tiny-F32.gguf"), max_tensors=4)
    assert len(shards) >= 3
    a = export_gguf(single, tmp_path / "from-single", dtype="f32").out_dir
    b = export_gguf(shards[-1], tmp_path / "from-shards", dtype="f32").out_dir
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        assert (b / p.name).read_bytes() == p.read_bytes(), p.name
