"""Runtime memory of llama.cpp for a model: KV cache (exact), compute buffers (a model of the graph allocator's
peak), output buffer, and the split between CPU and GPU for a number of offloaded layers."""
from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from ..errors import InvalidArgumentError
from ..gguf.header import layer_of
from .shapes import ModelSpec

KV_TYPES = {"f16": T.F16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "f32": T.F32, "bf16": T.BF16}
CTX_PAD = 256  # llama_context pads n_ctx to a multiple of 256
MAX_CTX = 1 << 24

def row_bytes(ttype: T, n: int) -> int:
    block, size = GGML_QUANT_SIZES[ttype]
    return n // block * size


@dataclass
class RuntimeMemory:
    n_ctx: int  # as llama.cpp sizes it (padded)
    n_ubatch: int
    kv_type: str
    flash_attn: bool
    kv_bytes: int
    kv_bytes_per_layer: int
    compute_bytes: int
    output_bytes: int


def runtime_memory(spec: ModelSpec, n_ctx: int, kv_type: str = "f16", flash_attn: bool = True,
                   n_batch: int = 2048, n_ubatch: int = 512) -> RuntimeMemory:
    if not 1 <= n_ctx <= MAX_CTX:
        raise InvalidArgumentError(f"context size {n_ctx:,} is out of range", hint=f"use 1 … {MAX_CTX:,} tokens")
    kv_key = kv_type.lower()
    if kv_key not in KV_TYPES:
        raise InvalidArgumentError(f"unknown KV cache type {kv_type!r}", hint=f"use one of {', '.join(KV_TYPES)}")
    if kv_key in ("q8_0", "q4_0") and not flash_attn and not spec.kv_lora_rank:
        raise InvalidArgumentError(f"a {kv_key} V cache needs flash attention in llama.cpp", hint="drop --no-flash-attn")
    ctype = KV_TYPES[kv_key]
    ctx = -(-n_ctx // CTX_PAD) * CTX_PAD
    if spec.kv_lora_rank:  # MLA: one compressed latent (+ the rope part of K) per token, V is read from it
        per_layer = row_bytes(ctype, (spec.kv_lora_rank + spec.rope_dim) * ctx)
    else:
        per_layer = 2 * row_bytes(ctype, spec.n_head_kv * spec.head_dim * ctx)
    n_tokens = max(1, min(n_ubatch, n_batch, ctx))
    return RuntimeMemory(ctx, n_tokens, kv_key, flash_attn, per_layer * spec.n_layer, per_layer,
                         compute_bytes(spec, ctx, n_tokens, flash_attn), 4 * spec.n_vocab)


def compute_bytes(spec: ModelSpec, n_kv: int, n_tokens: int, flash_attn: bool) -> int:
    """The peak of llama.cpp's compute graph for one ubatch, in f32 activations per token, as the largest of three
    phases: the output (logits and the final norm), a layer's FFN (gate, up, their activation and product, the
    residual) and a layer's attention (KQ without flash attention; Q, K, V and the residual stream). The KQ mask
    (f32 without flash attention, f16 with it) is live in every layer, so it adds to the last two.
    Checked against llama.cpp's reported CPU compute buffer in the tests (within 10%)."""
    n_embd_kv = spec.n_head_kv * spec.head_dim if not spec.kv_lora_rank else spec.kv_lora_rank + spec.rope_dim
    mask = n_kv / 2 if flash_attn else n_kv
    output = spec.n_vocab + 2 * spec.n_embd
    ffn = 4 * spec.n_ff + spec.n_embd + 8
    attn = 5 * spec.n_embd + 2 * n_embd_kv + (0 if flash_attn else n_kv * spec.n_head)
    return int(4 * n_tokens * max(output, mask + ffn, mask + attn))


@dataclass
class Placement:
    n_gpu_layers: int
    gpu_bytes: int
    cpu_bytes: int


def placement(spec: ModelSpec, tensor_bytes: dict[str, int], rt: RuntimeMemory, n_gpu_layers: int,
              gpu_overhead: int = 0) -> Placement:
    """Memory on the GPU and the CPU when llama.cpp offloads `n_gpu_layers`: the last layers first, then (when
    n_gpu_layers > n_layer) the output layer; token_embd always stays on the CPU. Compute buffers are on the
    GPU as soon as anything is offloaded (llama.cpp also keeps a smaller CPU one; counted on the CPU side)."""
    n_layer = spec.n_layer
    ngl = max(0, min(n_gpu_layers, n_layer + 1))
    first_gpu = n_layer - min(ngl, n_layer)
    gpu = cpu = 0
    for name, size in tensor_bytes.items():
        layer = layer_of(name)
        on_gpu = (layer is not None and layer >= first_gpu) or (
            layer is None and ngl > n_layer and name != "token_embd.weight")
        if on_gpu:
            gpu += size
        else:
            cpu += size
    kv_gpu = rt.kv_bytes_per_layer * min(ngl, n_layer)
    gpu += kv_gpu
    cpu += rt.kv_bytes - kv_gpu + rt.output_bytes
    if ngl:
        gpu += rt.compute_bytes + gpu_overhead
        cpu += rt.n_ubatch * 4 * spec.n_embd * 2  # the CPU side keeps the embeddings' input and a copy
    else:
        cpu += rt.compute_bytes
    return Placement(ngl, gpu, cpu)
