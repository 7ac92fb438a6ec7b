"""config.json and generation_config.json of the checkpoint, from the GGUF's metadata.

What llama.cpp keeps is enough for Llama/Qwen2ForCausalLM, except Llama-3.1's rope scaling, which the converter
turns into per-frequency factors (the `rope_freqs` tensor): `llama3_rope_scaling` recovers parameters that give
exactly those factors, and refuses when none do."""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from gguf import MODEL_ARCH, GGUFReader

from ..tensors import llama3_rope_factors
from ...errors import UnsupportedModelError
from ...gguf.reader import arch_field
from ...models import Architecture
from .tokenizer import GGUFVocab

log = logging.getLogger(__name__)

TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}

# Llama-3.1's values, used when the factors have too few points between the two cut-offs to fit them.
LLAMA31_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def read_hparams(reader: GGUFReader, arch: Architecture) -> dict[str, Any]:
    """The shape metadata, as plain numbers, with llama.cpp's defaults for what may be left out."""

    def number(suffix: str, default: Any = None) -> Any:
        value = arch_field(reader, suffix, default)
        if isinstance(value, list):
            raise UnsupportedModelError(
                f"{arch.name}.{suffix} varies per layer, which {arch.name} checkpoints cannot express")
        if value is None:
            raise UnsupportedModelError(f"the GGUF has no {arch.name}.{suffix}")
        return value

    hp: dict[str, Any] = {
        "block_count": number("block_count"),
        "context_length": number("context_length"),
        "embedding_length": number("embedding_length"),
        "feed_forward_length": number("feed_forward_length"),
        "head_count": number("attention.head_count"),
        "rms_norm_eps": number("attention.layer_norm_rms_epsilon"),
        "rope_theta": number("rope.freq_base", 10000.0),
        "rope_scaling_type": arch_field(reader, "rope.scaling.type"),
        "rope_scaling_factor": arch_field(reader, "rope.scaling.factor"),
        "rope_original_context": arch_field(reader, "rope.scaling.original_context_length"),
    }
    hp["head_count_kv"] = number("attention.head_count_kv", hp["head_count"])
    hp["head_dim"] = number("attention.key_length", hp["embedding_length"] // hp["head_count"])
    if number("attention.value_length", hp["head_dim"]) != hp["head_dim"]:
        raise UnsupportedModelError("the GGUF's key and value head sizes differ")
    if number("rope.dimension_count", hp["head_dim"]) != hp["head_dim"]:
        raise UnsupportedModelError("the GGUF uses rope on part of each head, which this architecture cannot express")
    if arch.model_arch == MODEL_ARCH.QWEN2 and hp["head_dim"] * hp["head_count"] != hp["embedding_length"]:
        raise UnsupportedModelError(f"{arch.hf_class} needs head size × heads = hidden size")
    return hp


def rope_scaling(hp: dict[str, Any], rope_freqs: np.ndarray | None) -> dict[str, Any] | None:
    """transformers' `rope_scaling` for the GGUF: llama3 from a rope_freqs tensor, or linear/yarn from metadata."""
    if rope_freqs is not None:
        return llama3_rope_scaling(rope_freqs, hp["rope_theta"], hp["head_dim"])
    kind, factor = hp["rope_scaling_type"], hp["rope_scaling_factor"]
    if kind in (None, "none") or not factor or factor == 1.0:
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        original = hp["rope_original_context"] or hp["context_length"]
        return {"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": int(original)}
    raise UnsupportedModelError(f"rope scaling {kind!r} is not supported (supported: linear, yarn, llama3)")


def llama3_rope_scaling(rope_freqs: np.ndarray, theta: float, head_dim: int) -> dict[str, Any]:
    """Recover (factor, low/high_freq_factor, original context) from llama.cpp's rope_freqs tensor.

    Between the two cut-offs the smoothing is linear in 1/wavelength, s = a/λ + b with a = L/(h−l) and
    b = −l/(h−l); scaling l, h and L together changes nothing, so l is fixed to 1 and h, L follow from a, b.
    With fewer than two points in between, Llama-3.1's values are tried. Whatever is found must reproduce
    the tensor, or the export stops rather than write a model that computes something else."""
    factors = np.asarray(rope_freqs, dtype=np.float64).reshape(-1)
    if factors.shape[0] != head_dim // 2:
        raise UnsupportedModelError(f"rope_freqs has {factors.shape[0]} values, expected {head_dim // 2}")
    factor = float(factors.max())
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    wavelen = 2 * math.pi / freqs.astype(np.float64)
    tol = 1e-5 * factor
    between = (factors > 1 + tol) & (factors < factor - tol)
    candidates = []
    if between.sum() >= 2 and factor > 1:
        smooth = (1 / factors[between] - 1 / factor) / (1 - 1 / factor)
        a, b = np.polyfit(1 / wavelen[between], smooth, 1)
        if b < 0:
            high, old = 1 - 1 / b, -a / b
            candidates += [(1.0, round(high, 3), round(old)), (1.0, high, old)]
    candidates.append(tuple(LLAMA31_ROPE.values()))
    for low, high, old in candidates:
        rope = {"factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                "original_max_position_embeddings": old}
        if np.allclose(llama3_rope_factors(theta, head_dim, rope), factors, rtol=1e-4, atol=0):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": float(low),
                    "high_freq_factor": float(high), "original_max_position_embeddings": int(round(old))}
    raise UnsupportedModelError(
        "the rope_freqs tensor does not follow Llama-3.1 (llama3) rope scaling; transformers cannot express it",
        hint="this GGUF cannot be exported exactly",
    )


def hf_config(
    arch: Architecture, hp: dict[str, Any], vocab: GGUFVocab, *, vocab_size: int, tied: bool, attention_bias: bool,
    rope: dict[str, Any] | None, dtype: str,
) -> dict[str, Any]:
    torch_dtype = TORCH_DTYPES[dtype]
    config: dict[str, Any] = {
        "architectures": [arch.hf_class],
        "model_type": arch.model_type,
        "vocab_size": vocab_size,
        "hidden_size": hp["embedding_length"],
        "intermediate_size": hp["feed_forward_length"],
        "num_hidden_layers": hp["block_count"],
        "num_attention_heads": hp["head_count"],
        "num_key_value_heads": hp["head_count_kv"],
        "hidden_act": "silu",
        "max_position_embeddings": hp["context_length"],
        "rms_norm_eps": hp["rms_norm_eps"],
        "rope_theta": hp["rope_theta"],
        "rope_scaling": rope,
        # transformers ≥ 5 reads one dict; older versions read the two keys above
        "rope_parameters": {"rope_type": "default", **(rope or {}), "rope_theta": hp["rope_theta"]},
        "tie_word_embeddings": tied,
        "bos_token_id": vocab.bos_id,
        "eos_token_id": vocab.eos_id,
        "pad_token_id": vocab.pad_id,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": torch_dtype,
        "dtype": torch_dtype,
    }
    if arch.model_arch == MODEL_ARCH.LLAMA:
        config.update(head_dim=hp["head_dim"], attention_bias=attention_bias, mlp_bias=False, pretraining_tp=1)
    else:
        config.update(use_sliding_window=False, sliding_window=hp["context_length"],
                      max_window_layers=hp["block_count"])
    return config


def generation_config(vocab: GGUFVocab) -> dict[str, Any]:
    config = {"bos_token_id": vocab.bos_id, "eos_token_id": vocab.eos_id}
    if vocab.pad_id is not None:
        config["pad_token_id"] = vocab.pad_id
    return config

