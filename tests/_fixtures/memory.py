"""Tiny R1-shaped GGUF models written with the gguf writer, shaped to trigger each of libllama's per-tensor rules.

Widths are multiples of 256 where the k-quants need them (except where a fixture tests the fallbacks), and the
layer counts, GQA ratios, biases and architectures are those that change libllama's choices: 28/32/48/64/80 layers,
n_head/n_head_kv of 1, 2, 4 and 8, qwen2 with q/k/v biases, llama with a Llama-3.1 `rope_freqs` tensor.
The tokenizer is `no_vocab` with a vocab_size: enough for libllama to quantize and to load the model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

from reference.cache import cached_dir

VERSION = 1


@dataclass(frozen=True)
class TinyModel:
    name: str
    arch: str  # "llama" | "qwen2"
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int = 512
    tied: bool = False
    rope_freqs: bool = False
    context_length: int = 32768

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


FIXTURES: dict[str, TinyModel] = {m.name: m for m in (
    # 1.5B/7B-like: qwen2, 28 layers, biases; GQA 2 (< 4: Q2_K keeps attn_v at Q3_K); n_ff 320 is not a multiple
    # of 256, so every k-quant of ffn_down takes libllama's fallback type
    TinyModel("qwen2-28", "qwen2", 28, 256, 4, 2, 320),
    # 8B-like: llama, 32 layers, GQA 4, rope_freqs
    TinyModel("llama-32", "llama", 32, 256, 8, 2, 512, rope_freqs=True),
    # 14B-like: 48 layers, GQA 4
    TinyModel("qwen2-48", "qwen2", 48, 256, 4, 1, 256),
    # 32B-like: 64 layers, GQA 8
    TinyModel("qwen2-64", "qwen2", 64, 256, 8, 1, 256),
    # 70B-like: llama, 80 layers, n_head/n_head_kv = 8 → libllama's LLM_TYPE_70B rules
    TinyModel("llama-80", "llama", 80, 256, 8, 1, 256, rope_freqs=True),
    # 80 layers without GQA is llama's 65B type: no 70B bump
    TinyModel("llama-80-mha", "llama", 80, 256, 2, 2, 256),
    # tied embeddings, n_ff 336 (not even a multiple of 32: Q4_0/Q5_0 fall back to F16)
    TinyModel("llama-16-tied", "llama", 16, 256, 4, 4, 336, tied=True),
)}


def write_tiny_model(path: Path, m: TinyModel, dtype: str = "F16", seed: int = 0) -> Path:
    """Write `m` as a GGUF with random weights: 2-D weights in `dtype` (F16 or F32), 1-D tensors in F32."""
    rng = np.random.default_rng(seed)
    np_dtype = {"F16": np.float16, "F32": np.float32}[dtype]
    w = GGUFWriter(path, m.arch)
    w.add_name(f"tiny-{m.name}")
    w.add_block_count(m.n_layer)
    w.add_context_length(m.context_length)
    w.add_embedding_length(m.n_embd)
    w.add_feed_forward_length(m.n_ff)
    w.add_head_count(m.n_head)
    w.add_head_count_kv(m.n_head_kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(m.n_vocab)
    w.add_file_type(LlamaFileType.MOSTLY_F16 if dtype == "F16" else LlamaFileType.ALL_F32)
    w.add_tokenizer_model("no_vocab")

    def matrix(rows: int, cols: int) -> np.ndarray:  # numpy shape (rows, cols) = ggml ne (cols, rows)
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np_dtype)

    def vector(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    hd, kv = m.head_dim, m.n_head_kv * m.head_dim
    w.add_tensor("token_embd.weight", matrix(m.n_vocab, m.n_embd))
    w.add_tensor("output_norm.weight", vector(m.n_embd))
    if not m.tied:
        w.add_tensor("output.weight", matrix(m.n_vocab, m.n_embd))
    if m.rope_freqs:
        w.add_tensor("rope_freqs.weight", vector(hd // 2))
    for i in range(m.n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", vector(m.n_embd))
        w.add_tensor(p + "attn_q.weight", matrix(m.n_embd, m.n_embd))
        w.add_tensor(p + "attn_k.weight", matrix(kv, m.n_embd))
        w.add_tensor(p + "attn_v.weight", matrix(kv, m.n_embd))
        if m.arch == "qwen2":
            w.add_tensor(p + "attn_q.bias", np.zeros(m.n_embd, dtype=np.float32))
            w.add_tensor(p + "attn_k.bias", np.zeros(kv, dtype=np.float32))
            w.add_tensor(p + "attn_v.bias", np.zeros(kv, dtype=np.float32))
        w.add_tensor(p + "attn_output.weight", matrix(m.n_embd, m.n_embd))
        w.add_tensor(p + "ffn_norm.weight", vector(m.n_embd))
        w.add_tensor(p + "ffn_gate.weight", matrix(m.n_ff, m.n_embd))
        w.add_tensor(p + "ffn_up.weight", matrix(m.n_ff, m.n_embd))
        w.add_tensor(p + "ffn_down.weight", matrix(m.n_embd, m.n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_model(name: str, dtype: str = "F16") -> Path:
    """The fixture `name` as a GGUF file, built once and cached."""
    m = FIXTURES[name]
    key = "-".join(str(v) for v in asdict(m).values())

    def build(tmp: Path) -> None:
        write_tiny_model(tmp / "model.gguf", m, dtype)

    folder = cached_dir(f"memory-fixture-v{VERSION}-{key}-{dtype}", build)
    return folder / "model.gguf"


GGML_TYPE_NAMES = {t.name: t for t in GGMLQuantizationType}


# the tiny float model budget mixes are planned on (test_mixes.py, test_parse_once.py share its cached file)
MIX_MODEL = TinyModel("mix-2", "llama", 2, 256, 4, 2, 512)


def mix_model() -> Path:
    return cached_dir("mix-model-v1", lambda tmp: write_tiny_model(tmp / "mix-F16.gguf", MIX_MODEL)) / "mix-F16.gguf"


def write_random_imatrix(path: Path, base: Path, seed: int = 7) -> Path:
    """A GGUF imatrix for `base`: random positive sums of squares per input column of each layer matmul, as over
    10 chunks of 100 tokens (counts 1000)."""
    from gguf import GGUFReader

    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, arch=None)
    w.add_string("general.type", "imatrix")
    for t in GGUFReader(base).tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            w.add_tensor(t.name + ".in_sum2", rng.uniform(0.1, 30, (1, int(t.shape[0]))).astype(np.float32))
            w.add_tensor(t.name + ".counts", np.full((1, 1), 1000.0, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
