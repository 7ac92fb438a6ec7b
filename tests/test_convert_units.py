"""Pieces of the converter on their own: sharded checkpoints, the bf16 pass-through, the llama3 rope factors."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from quantkit.convert import convert_checkpoint
from quantkit.convert.checkpoint import CheckpointTensor, open_checkpoint, read_safetensors_header
from quantkit.convert.passthrough import needs_quieting
from quantkit.convert.encode import stored_bits
from tests._fixtures.gguf_tensors import tensor_table
from reference.tiny import tiny_checkpoint


def _shard(src: Path, dst: Path) -> None:
    """The same checkpoint as two safetensors shards with an index, like the big repos."""
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    for f in src.iterdir():
        if f.suffix == ".json":
            (dst / f.name).write_bytes(f.read_bytes())
    tensors = load_file(src / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, dst / file, metadata={"format": "pt"})
        weight_map |= {n: file for n in part}
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.slow
def test_sharded_checkpoint_converts_like_the_single_file(tmp_path):
    src = tiny_checkpoint("llama")
    _shard(src, tmp_path / "sharded")
    assert len(open_checkpoint(tmp_path / "sharded").tensors) == len(open_checkpoint(src).tensors)
    convert_checkpoint(src, tmp_path / "single.gguf", "F16")
    convert_checkpoint(tmp_path / "sharded", tmp_path / "sharded.gguf", "F16")
    assert tensor_table(tmp_path / "single.gguf") == tensor_table(tmp_path / "sharded.gguf")


def test_bf16_pass_through_matches_gguf_rounding(tmp_path):
    bits = np.array([0x0000, 0x8000, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFA5, 0x0001, 0x7F7F],
                    dtype=np.uint16).reshape(1, -1)
    header = json.dumps({"t": {"dtype": "BF16", "shape": list(bits.shape), "data_offsets": [0, bits.nbytes]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bits.tobytes())
    (tmp_path / "config.json").write_text("{}")
    checkpoint = open_checkpoint(tmp_path)
    ours = stored_bits(checkpoint.read("t")[0:1])
    as_f32 = (bits.astype(np.uint32) << 16).view(np.float32)
    reference = quants.quantize(as_f32, GGMLQuantizationType.BF16)
    assert ours.tobytes() == reference.tobytes()


def _bf16_file(tmp_path: Path, bits: np.ndarray) -> CheckpointTensor:
    path = tmp_path / f"bits-{bits.size}.bin"
    path.write_bytes(b"pad" + bits.tobytes())
    return CheckpointTensor("t", "BF16", (bits.size,), path, 3)


def _changed_by_gguf_rounding(bits: np.ndarray) -> bool:
    as_f32 = (bits.astype(np.uint32) << 16).view(np.float32)
    return bool((quants.quantize(as_f32, GGMLQuantizationType.BF16).view(np.uint16) != bits).any())


@pytest.mark.parametrize("n", [1, 3, 4, 5, 1001, (4 << 20) // 2 + 7])  # the last spans two scan chunks
def test_nan_scan_agrees_with_gguf_rounding(tmp_path, n):
    rng = np.random.default_rng(n)
    clean = rng.integers(0, 0x10000, n, dtype=np.uint16)
    clean[(clean & 0x7F80) == 0x7F80] = 0x3F80  # no Inf/NaN to begin with
    assert not needs_quieting(_bf16_file(tmp_path, clean))
    for position in sorted({0, n // 2, n - 1}):
        for value in (0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0xFFBF):  # ±Inf, quiet NaNs, signalling NaNs
            bits = clean.copy()
            bits[position] = value
            expected = _changed_by_gguf_rounding(bits)
            assert expected == (value in (0x7F81, 0xFFBF))
            assert needs_quieting(_bf16_file(tmp_path, bits)) == expected, (position, hex(value))


@pytest.mark.slow
def test_signalling_nan_in_a_copied_tensor_is_quieted(tmp_path):
    src, folder = tiny_checkpoint("qwen2"), tmp_path / "nan"
    shutil.copytree(src, folder)
    info = open_checkpoint(folder).tensors["model.layers.0.mlp.up_proj.weight"]
    with open(info.file, "r+b") as f:
        f.seek(info.offset + 2 * 1000)
        f.write(np.array([0x7F81, 0xFFA5], dtype=np.uint16).tobytes())
    convert_checkpoint(folder, tmp_path / "nan.gguf", "BF16")
    convert_checkpoint(src, tmp_path / "clean.gguf", "BF16")
    nan, clean = tensor_table(tmp_path / "nan.gguf"), tensor_table(tmp_path / "clean.gguf")
    assert {k for k in nan if nan[k] != clean[k]} == {"blk.0.ffn_up.weight"}
    source = open_checkpoint(folder).read(info.name)
    reference = quants.quantize((source.astype(np.uint32) << 16).view(np.float32), GGMLQuantizationType.BF16)
    assert nan["blk.0.ffn_up.weight"][2] == reference.tobytes()


def test_safetensors_header_checked_against_file_size(tmp_path):
    header = json.dumps({"t": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 32)  # half the data
    from quantkit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not fit"):
        read_safetensors_header(path)


_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 128, "vocab_size": 1000}


@pytest.mark.parametrize("bad, message", [
    ({"hidden_size": [1]}, "bad value"), ({"vocab_size": None}, "lacks vocab_size"), ({"num_attention_heads": 0}, "non-positive"),
    ({"intermediate_size": -5}, "non-positive"), ({"max_position_embeddings": "abc"}, "max_position_embeddings"),
    ({"architectures": {"a": 1}}, "not supported"), ({"architectures": "Qwen2ForCausalLM"}, "not supported"),
])
def test_garbled_config_is_a_clear_error(bad, message):
    from quantkit.errors import QuantkitError
    from quantkit.memory.shapes import from_config

    with pytest.raises(QuantkitError, match=message):
        from_config(_CONFIG | bad, "x", "config", "x")


def test_config_shape_fallbacks():
    from quantkit.models import ConfigShape, llama3_rope

    shape = ConfigShape.of(_CONFIG)
    assert (shape.n_head_kv, shape.head_dim) == (4, 16)  # one KV head per head; n_embd / n_head
    assert llama3_rope(_CONFIG | {"rope_scaling": "x"}) is None
    assert llama3_rope(_CONFIG | {"rope_parameters": {"rope_type": "llama3", "factor": 8.0}})["factor"] == 8.0


@pytest.mark.slow
@pytest.mark.parametrize("error", [errno.EXDEV, errno.ENOSYS])
def test_without_copy_file_range_the_bytes_are_the_same(tmp_path, monkeypatch, error):
    """Where the kernel cannot copy between the two files (an old kernel across file systems, another OS),
    the tensors go through Python instead, to the same bytes."""
    src = tiny_checkpoint("qwen2")
    convert_checkpoint(src, tmp_path / "kernel.gguf", "BF16")

    def refuse(*args):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    convert_checkpoint(src, tmp_path / "python.gguf", "BF16")
    assert (tmp_path / "python.gguf").read_bytes() == (tmp_path / "kernel.gguf").read_bytes()
