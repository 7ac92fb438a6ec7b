"""The threaded encoder: chunks of rows encoded on 1, 2 or 3 threads give convert_hf_to_gguf.py's bytes; the
short roads to F16 and Q8_0 give gguf.quants' bytes on every bf16 value and on the awkward floats; memory
stays at a few chunks per thread; a failing chunk leaves no file and no thread behind."""
from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from quantkit.convert import convert_checkpoint, writer
from quantkit.convert.encode import as_f32, encode
from quantkit.convert.tensors import ConvertedTensor, _CHUNK_VALUES
from quantkit.errors import InvalidArgumentError, OutputError
from tests._fixtures.gguf_tensors import tensor_table
from tests._fixtures.reference import reference_gguf
from reference.tiny import tiny_checkpoint

T = GGMLQuantizationType


def _gguf_bytes(bits: np.ndarray, qtype: GGMLQuantizationType) -> bytes:
    return quants.quantize(as_f32(bits), qtype).tobytes()


def _bf16(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.BF16, T.Q8_0])
def test_every_bf16_value_encodes_as_gguf_does(qtype):
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).reshape(-1, 256)  # NaNs, Infs, subnormals, ±0
    with np.errstate(all="ignore"):
        assert encode(bits, "BF16", qtype).tobytes() == _gguf_bytes(bits, qtype)


@pytest.mark.parametrize("dtype", ["BF16", "F32"])
def test_q8_0_of_awkward_blocks_is_gguf_s(dtype):
    """Scales from 1e-40 to 1e38 (1/d overflowing, d overflowing f16), all-zero and negative-zero blocks, ties
    at .5, and a lone Inf or NaN: each 32-value block on its own row and all together."""
    rng = np.random.default_rng(0)
    scale = np.float32(10.0) ** rng.integers(-40, 39, size=(64, 1)).astype(np.float32)
    values = (rng.standard_normal((64, 96), dtype=np.float32) * scale).astype(np.float32)
    values[0] = 0.0
    values[1] = -0.0
    values[2, :32] = np.arange(32, dtype=np.float32) - 15.5  # 127/15.5 scales to exact halves
    values[3, 5], values[4, 40] = np.inf, np.nan
    raw = _bf16(values) if dtype == "BF16" else values
    with np.errstate(all="ignore"):
        expected = quants.quantize(as_f32(raw), T.Q8_0).tobytes()
        assert encode(raw, dtype, T.Q8_0).tobytes() == expected
        assert b"".join(encode(raw[i:i + 1], dtype, T.Q8_0).tobytes() for i in range(64)) == expected


def test_chunks_are_whole_rows_and_cover_the_tensor():
    rows = 3 * _CHUNK_VALUES // 4096 + 7
    plan = ConvertedTensor("t", (rows, 4096), T.Q8_0, lambda a, b: None, "BF16")
    chunks = plan.chunks()
    assert len(chunks) == 4 and chunks[0][0] == 0 and chunks[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert ConvertedTensor("v", (10,), T.F32, lambda a, b: None).chunks() == [(0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("family", "outtype"), [("qwen2", "F16"), ("qwen2", "Q8_0"), ("llama", "Q8_0"),
                                                 ("llama", "F32")])
def test_same_bytes_as_llama_cpp_on_any_thread_count(family, outtype, threads, tmp_path):
    """The embeddings span dozens of chunks, so the threads finish them out of order; llama's q/k rows are
    permuted, so its chunks are gathered rows."""
    checkpoint = tiny_checkpoint(family)
    ref = tensor_table(reference_gguf(checkpoint, f"{family}-v1", outtype.lower()))
    convert_checkpoint(checkpoint, tmp_path / "ours.gguf", outtype, threads=threads)
    ours = tensor_table(tmp_path / "ours.gguf")
    assert ours == ref


@pytest.mark.slow
def test_memory_stays_at_a_few_chunks_per_thread(tmp_path, monkeypatch):
    """Writing the tensor data of the tiny Qwen2 as Q8_0 on 3 threads: its embedding alone is 78 MB in float32,
    the numpy memory held at once stays under 3 threads × a chunk's temporaries (about 8 float32 copies)."""
    real = writer._write_data
    peak = {}

    def measured(*args, **kwargs):
        tracemalloc.start()
        try:
            real(*args, **kwargs)
            peak["bytes"] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    monkeypatch.setattr(writer, "_write_data", measured)
    convert_checkpoint(tiny_checkpoint("qwen2"), tmp_path / "q8.gguf", "Q8_0", threads=3)
    assert peak["bytes"] < 3 * 8 * 4 * _CHUNK_VALUES


def _encode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("quantkit-encode")]


@pytest.mark.slow
def test_a_failing_chunk_leaves_no_file_and_no_thread(tmp_path, monkeypatch):
    calls = []
    real = ConvertedTensor.encode

    def fail_once_started(self, start, stop):
        calls.append(start)
        if len(calls) == 20:
            raise OSError(5, "Input/output error")
        return real(self, start, stop)

    monkeypatch.setattr(ConvertedTensor, "encode", fail_once_started)
    with pytest.raises(OutputError, match="Input/output error"):
        convert_checkpoint(tiny_checkpoint("qwen2"), tmp_path / "out.gguf", "F16", threads=3)
    assert list(tmp_path.iterdir()) == []
    assert _encode_threads() == []


def test_zero_threads_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="threads"):
        convert_checkpoint(tiny_checkpoint("qwen2"), tmp_path / "out.gguf", "F16", threads=0)
    assert list(tmp_path.iterdir()) == []
