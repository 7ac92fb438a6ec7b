"""GGUF tensors as Hugging Face tensors: names from gguf-py's own tables, llama.cpp's q/k row order undone,
weights dequantized a slice of rows at a time so that memory stays bounded whatever the tensor's size."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from gguf import MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, GGUFReader, ReaderTensor, TensorNameMap
from gguf.quants import _type_traits as _DEQUANTIZERS

from ...errors import UnsupportedModelError, UnsupportedTensorTypeError
from ...models import Architecture

log = logging.getLogger(__name__)

# The rows llama.cpp's converter permutes (rotate-half → interleaved pairs) where the architecture's table says
# so, and the head count each is permuted over.
_QK_HEADS = {MODEL_TENSOR.ATTN_Q: "head_count", MODEL_TENSOR.ATTN_K: "head_count_kv"}

# Tensors that are not weights of the HF model: the llama3 rope factors become config.json's rope_scaling.
_INTO_CONFIG = {MODEL_TENSOR.ROPE_FREQS}

_SUFFIXES = (".weight", ".bias")
_CHUNK_BYTES = 64 << 20  # f32 bytes dequantized at a time


@dataclass(frozen=True)
class ExportedTensor:
    """One tensor of the checkpoint: where it comes from and how it is turned into the HF layout."""

    hf_name: str
    shape: tuple[int, ...]  # HF (row-major) shape
    source: ReaderTensor | None  # None: zeros the HF model needs but llama.cpp does not store
    unpermute_heads: int = 0  # undo llama.cpp's q/k row permutation over this many heads (0: none)

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))


class HFNames:
    """Transformers (Llama/Qwen2ForCausalLM) names of GGUF tensors, picked among the HF names gguf-py's table
    lists for each GGUF tensor: these classes put the decoder under `model.` (blocks under `model.layers.N.`,
    one module deep) and the output projection at `lm_head`."""

    def __init__(self, name_map: TensorNameMap):
        self._candidates: dict[str, list[str]] = {}
        for hf, (_, gguf_name) in name_map.mapping.items():
            if hf != gguf_name:
                self._candidates.setdefault(gguf_name, []).append(hf)

    def __call__(self, gguf_name: str, kind: MODEL_TENSOR, bid: int | None) -> str:
        base, suffix = _split_suffix(gguf_name)
        for hf in self._candidates.get(base, []):
            if _is_causal_lm_name(hf, kind, bid):
                return hf + suffix
        raise UnsupportedModelError(f"no Hugging Face name known for tensor {gguf_name}")


def _is_causal_lm_name(hf: str, kind: MODEL_TENSOR, bid: int | None) -> bool:
    if kind == MODEL_TENSOR.OUTPUT:
        return hf == "lm_head"
    if bid is not None:
        prefix = f"model.layers.{bid}."
        return hf.startswith(prefix) and hf[len(prefix):].count(".") <= 1
    return hf.startswith("model.") and hf.count(".") == 1


def _split_suffix(name: str) -> tuple[str, str]:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _tensor_kind(name_map: TensorNameMap, name: str) -> tuple[MODEL_TENSOR, int | None]:
    found = name_map.get_type_and_name(name, try_suffixes=_SUFFIXES)
    if found is None:
        raise UnsupportedModelError(f"tensor {name} is not part of this architecture")
    parts = name.split(".")
    bid = int(parts[1]) if parts[0] == "blk" else None
    return found[0], bid


def plan_hf_tensors(reader: GGUFReader, arch: Architecture, hparams: dict) -> list[ExportedTensor]:
    """The checkpoint's tensors, in the GGUF's order; checks every tensor can be read before anything is written."""
    name_map = TensorNameMap(arch.model_arch, hparams["block_count"])
    hf_names = HFNames(name_map)
    permuted = _QK_HEADS if arch.permuted_qk else {}
    plans: list[ExportedTensor] = []
    for t in reader.tensors:
        kind, bid = _tensor_kind(name_map, t.name)
        if kind in _INTO_CONFIG:
            continue
        _check_dequantizable(t)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        heads = hparams[permuted[kind]] if kind in permuted else 0
        if heads and shape[0] % (2 * heads):
            raise UnsupportedModelError(f"{t.name} has {shape[0]} rows, not a whole number of heads ({heads})")
        plans.append(ExportedTensor(hf_names(t.name, kind, bid), shape, t, heads))
    plans += _zero_biases(hf_names, plans, _bias_set(arch, plans), hparams["block_count"])
    return plans


# Attention biases the HF class has as a set: Qwen2 always has q/k/v biases; Llama's `attention_bias` gives
# q/k/v/o biases together. A GGUF may store only some of them (llama.cpp treats each as optional).
_QKV = (MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V)


def _bias_set(arch: Architecture, plans: list[ExportedTensor]) -> tuple[MODEL_TENSOR, ...]:
    if arch.qkv_bias:
        return _QKV
    if any(p.hf_name.endswith("_proj.bias") and ".self_attn." in p.hf_name for p in plans):
        return (*_QKV, MODEL_TENSOR.ATTN_OUT)
    return ()


def _zero_biases(hf_names: HFNames, plans: list[ExportedTensor], kinds: tuple[MODEL_TENSOR, ...],
                 n_blocks: int) -> list[ExportedTensor]:
    """Zeros for the biases the HF class will have but the GGUF does not store; transformers would otherwise
    fill them with random values. Zeros are what llama.cpp computes with."""
    by_name = {p.hf_name: p for p in plans}
    extra = []
    for bid in range(n_blocks):
        for kind in kinds:
            weight = hf_names(TENSOR_NAMES[kind].format(bid=bid) + ".weight", kind, bid)
            bias = weight.removesuffix(".weight") + ".bias"
            if bias not in by_name and weight in by_name:
                log.info("%s is not in the GGUF: writing zeros", bias)
                extra.append(ExportedTensor(bias, (by_name[weight].shape[0],), None))
    return extra


def _check_dequantizable(t: ReaderTensor) -> None:
    qtype = GGMLQuantizationType(t.tensor_type)
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) or qtype in _DEQUANTIZERS:
        return
    raise UnsupportedTensorTypeError(f"tensor {t.name} is {qtype.name}, which the gguf package cannot dequantize")


def unpermute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's `LlamaModel.permute`: interleaved (x0, y0, x1, y1, …) rows back to HF's
    rotate-half order (x0, x1, …, y0, y1, …) within each head. Works on any whole number of heads."""
    head_dim = rows.shape[0] // n_head
    return rows.reshape(n_head, head_dim // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def iter_rows(plan: ExportedTensor) -> Iterator[np.ndarray]:
    """The tensor's values as float32 in HF layout, a block of rows at a time (whole heads for q/k)."""
    if plan.source is None:
        yield np.zeros(plan.shape, dtype=np.float32)
        return
    qtype = GGMLQuantizationType(plan.source.tensor_type)
    data = plan.source.data
    if len(plan.shape) == 1:
        values = _dequantize(data, qtype).reshape(plan.shape)
        yield unpermute(values, plan.unpermute_heads) if plan.unpermute_heads else values
        return
    n_rows = plan.shape[0]
    row_bytes = 4 * plan.n_elements // n_rows
    step = max(1, _CHUNK_BYTES // row_bytes)
    if plan.unpermute_heads:
        head_rows = n_rows // plan.unpermute_heads
        step = max(1, step // head_rows) * head_rows
    data = data.reshape(n_rows, -1)
    for start in range(0, n_rows, step):
        block = _dequantize(data[start:start + step], qtype).reshape(-1, *plan.shape[1:])
        if plan.unpermute_heads:
            block = unpermute(block, block.shape[0] // head_rows)
        yield block


def _dequantize(data: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    from gguf.quants import dequantize

    return np.asarray(dequantize(np.ascontiguousarray(data), qtype), dtype=np.float32)
