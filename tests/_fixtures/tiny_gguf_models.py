"""Tiny random-weight llama and qwen2 GGUF models written with gguf.GGUFWriter the way llama.cpp's converter
writes real ones (q/k rows permuted for llama, F32 norms and biases, a llama3 `rope_freqs` tensor), carrying a
real tokenizer copied from one of llama.cpp's vocab-only GGUFs. For the export tests."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, TokenType

from reference.cache import cached_dir
from reference.sdist import vocab_gguf

# gguf's reader takes 10-20 s to parse a 150k-token vocabulary, so vocabularies are cut down once per machine
# for the tests that only need a real tokenizer, and full-vocabulary models are written once per machine.
_VERSION = "v1"


@dataclass(frozen=True)
class TinyShape:
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 96
    n_ctx: int = 16384
    rope_theta: float = 500000.0
    eps: float = 1e-5
    tied: bool = False
    llama3_rope: dict | None = field(default=None)  # factor, low_freq_factor, high_freq_factor, original context

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute (convert_hf_to_gguf / conversion/llama.py), HF rotate-half → interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_freqs(theta: float, dim: int, factor: float, low_freq_factor: float, high_freq_factor: float,
                      old_context_len: int) -> np.ndarray:
    """The rope_freqs tensor as llama.cpp's converter computes it (conversion/llama.py, generate_extra_tensors)."""
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_freq_wavelen:
            factors.append(1)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def copy_tokenizer(writer: GGUFWriter, vocab_gguf: Path, chat_template: str | None = None) -> int:
    """Copy every tokenizer.* key of `vocab_gguf` into `writer`; returns the vocabulary size."""
    reader = GGUFReader(vocab_gguf)
    n_vocab = 0
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if key == "tokenizer.chat_template" and chat_template is not None:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, f.contents(), vtype, sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(f.data)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    return n_vocab


def write_tiny_model(path: Path, arch: str, vocab_gguf: Path, shape: TinyShape = TinyShape(), seed: int = 0,
                     chat_template: str | None = None, big_f16: bool = True,
                     biases: bool | None = None) -> dict[str, np.ndarray]:
    """Write a tiny `arch` (llama or qwen2) GGUF; returns the tensors as stored in the GGUF (GGUF names,
    numpy shapes, q/k already permuted for llama). Embedding/output matrices are F16 when `big_f16`, the rest F32;
    qwen2 gets q/k/v biases (and llama too if `biases`)."""
    rng = np.random.default_rng(seed)
    s = shape
    w = GGUFWriter(path, arch)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(s.n_layer)
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_rope_freq_base(s.rope_theta)
    w.add_layer_norm_rms_eps(s.eps)
    w.add_rope_dimension_count(s.head_dim)
    w.add_file_type(1 if big_f16 else 0)
    n_vocab = copy_tokenizer(w, vocab_gguf, chat_template)
    w.add_vocab_size(n_vocab)

    tensors: dict[str, np.ndarray] = {}

    def add(name: str, data: np.ndarray) -> None:
        tensors[name] = data
        w.add_tensor(name, data)

    def matrix(rows: int, cols: int, f16: bool = False) -> np.ndarray:
        m = (rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(np.float32)
        return m.astype(np.float16) if f16 else m

    def norm(n: int) -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def bias(n: int) -> np.ndarray:
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    with_bias = arch == "qwen2" if biases is None else biases
    kv = s.n_head_kv * s.head_dim
    add("token_embd.weight", matrix(n_vocab, s.n_embd, big_f16))
    if s.llama3_rope is not None:
        add("rope_freqs.weight", llama3_rope_freqs(s.rope_theta, s.head_dim, **s.llama3_rope))
    for i in range(s.n_layer):
        p = f"blk.{i}."
        q, k = matrix(s.n_embd, s.n_embd), matrix(kv, s.n_embd)
        qb, kb = bias(s.n_embd), bias(kv)
        if arch == "llama":
            q, k = llama_cpp_permute(q, s.n_head), llama_cpp_permute(k, s.n_head_kv)
            qb, kb = llama_cpp_permute(qb, s.n_head), llama_cpp_permute(kb, s.n_head_kv)
        add(p + "attn_norm.weight", norm(s.n_embd))
        add(p + "attn_q.weight", q)
        add(p + "attn_k.weight", k)
        add(p + "attn_v.weight", matrix(kv, s.n_embd))
        if with_bias:
            add(p + "attn_q.bias", qb)
            add(p + "attn_k.bias", kb)
            add(p + "attn_v.bias", bias(kv))
        add(p + "attn_output.weight", matrix(s.n_embd, s.n_embd))
        add(p + "ffn_norm.weight", norm(s.n_embd))
        add(p + "ffn_gate.weight", matrix(s.n_ff, s.n_embd, big_f16))
        add(p + "ffn_up.weight", matrix(s.n_ff, s.n_embd))
        add(p + "ffn_down.weight", matrix(s.n_embd, s.n_ff))
    add("output_norm.weight", norm(s.n_embd))
    if not s.tied:
        add("output.weight", matrix(n_vocab, s.n_embd, big_f16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def reduced_vocab_gguf(name: str, n_keep: int = 3000) -> Path:
    """llama.cpp's ggml-vocab-`name`.gguf cut to its first `n_keep` tokens plus its control/user-defined tokens
    (renumbered after them) and the merges among the kept tokens: a smaller but real byte-level BPE vocabulary."""

    def build(tmp: Path) -> None:
        reader = GGUFReader(vocab_gguf(name))
        fields = {k: f for k, f in reader.fields.items() if k.startswith("tokenizer.")}
        tokens = fields["tokenizer.ggml.tokens"].contents()
        types = fields["tokenizer.ggml.token_type"].contents()
        special = {int(TokenType.CONTROL), int(TokenType.USER_DEFINED)}
        keep = list(range(n_keep)) + [i for i in range(n_keep, len(tokens)) if types[i] in special]
        new_id = {old: new for new, old in enumerate(keep)}
        kept = {tokens[i] for i in keep}
        merges = [m for m in fields["tokenizer.ggml.merges"].contents()
                  if all(part in kept for part in m.split(" ", 1)) and m.replace(" ", "", 1) in kept]
        w = GGUFWriter(tmp / f"{name}.gguf", "llama")
        for key, f in fields.items():
            vtype = f.types[0]
            value = f.contents()
            if key == "tokenizer.ggml.tokens":
                value = [tokens[i] for i in keep]
            elif key == "tokenizer.ggml.token_type":
                value = [types[i] for i in keep]
            elif key == "tokenizer.ggml.merges":
                value = merges
            elif key.endswith("_token_id"):
                value = new_id[value]
            w.add_key_value(key, value, vtype, sub_type=f.types[-1] if vtype == GGUFValueType.ARRAY else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    return cached_dir(f"tiny-vocab-{_VERSION}-{name}-{n_keep}", build) / f"{name}.gguf"


def full_vocab_model(arch: str, name: str, shape: TinyShape, chat_template: str | None = None) -> Path:
    """A tiny `arch` model carrying the whole of ggml-vocab-`name`.gguf, written once per machine."""

    def build(tmp: Path) -> None:
        write_tiny_model(tmp / "model.gguf", arch, vocab_gguf(name), shape, chat_template=chat_template)

    digest = hashlib.sha256(repr((shape, chat_template)).encode()).hexdigest()[:12]
    key = f"tiny-model-{_VERSION}-{arch}-{name}-{digest}"
    return cached_dir(key, build) / "model.gguf"
