"""Tiny random-weight llama GGUFs with a real tokenizer (llama.cpp's llama-spm vocabulary, 32000 tokens, BOS
added), for checking perplexity and KL-divergence against an independent computation in seconds.

`tiny_llama("base")` and `tiny_llama("noisy")` share every weight but the noise added to the second, like a
model and a quantization of it; both have a training context of 256 tokens."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

from reference.cache import cached_dir
from reference.sdist import vocab_gguf

VERSION = 4
N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF, CONTEXT = 64, 2, 4, 2, 128, 256
NOISE = {"base": 0.0, "noisy": 0.1}  # relative to the weights' scale


def _copy_tokenizer(w: GGUFWriter, vocab: GGUFReader) -> int:
    n_vocab = 0
    for key, f in vocab.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = f.contents()
        sub = f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(key, value, f.types[0], sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    if "tokenizer.ggml.add_bos_token" not in vocab.fields:
        w.add_bool("tokenizer.ggml.add_bos_token", True)
    return n_vocab


def write_tiny_llama(path: Path, noise: float = 0.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng(seed + 1000)
    w = GGUFWriter(path, "llama")
    w.add_name("tiny-llama-spm")
    n_vocab = _copy_tokenizer(w, GGUFReader(vocab_gguf("llama-spm")))
    w.add_block_count(N_LAYER)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(LlamaFileType.MOSTLY_F16)

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        m = rng.standard_normal((rows, cols), dtype=np.float32) * scale
        m += noise_rng.standard_normal((rows, cols), dtype=np.float32) * scale * noise
        return m.astype(np.float16)

    kv = N_HEAD_KV * (N_EMBD // N_HEAD)
    w.add_tensor("token_embd.weight", matrix(n_vocab, N_EMBD, 0.3))  # tied: also the output layer, logits ~ N(0, 2.4²)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", matrix(N_EMBD, N_EMBD, 0.3))
        w.add_tensor(p + "attn_k.weight", matrix(kv, N_EMBD, 0.3))
        w.add_tensor(p + "attn_v.weight", matrix(kv, N_EMBD, 0.3))
        w.add_tensor(p + "attn_output.weight", matrix(N_EMBD, N_EMBD, 0.1))
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", matrix(N_FF, N_EMBD, 0.3))
        w.add_tensor(p + "ffn_up.weight", matrix(N_FF, N_EMBD, 0.3))
        w.add_tensor(p + "ffn_down.weight", matrix(N_EMBD, N_FF, 0.1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_llama(name: str = "base") -> Path:
    def build(tmp: Path) -> None:
        write_tiny_llama(tmp / f"tiny-{name}.gguf", NOISE[name])

    return cached_dir(f"tiny-llama-spm-v{VERSION}-{name}", build) / f"tiny-{name}.gguf"
