"""From checkpoint tensors to GGUF tensors: names (gguf's TensorNameMap), the layout llama.cpp expects (Llama
q/k rows permuted, `rope_freqs` for llama3 rope scaling), and the stored type of each tensor.

Every tensor is produced in chunks of whole rows (`ConvertedTensor.chunks`), read from the memory-mapped
checkpoint as they are needed, so converting a large tensor never holds more than a few chunks of it — the
memory of a conversion stays flat in the size of the model — and chunks can be encoded on several threads.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gguf import (GGML_QUANT_SIZES, MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, LlamaFileType,
                  get_tensor_name_map, quant_shape_to_byte_shape)

from ..errors import CheckpointError, ModelConfigError, UnsupportedModelError
from ..models import CONVERTIBLE, Architecture, ConfigShape, architecture_of, llama3_rope
from .checkpoint import Checkpoint, CheckpointTensor
from .encode import SAME_BITS, encode

# --outtype -> llama.cpp file type and the type of the 2-D weights
OUTTYPES: dict[str, LlamaFileType] = {
    "F32": LlamaFileType.ALL_F32,
    "F16": LlamaFileType.MOSTLY_F16,
    "BF16": LlamaFileType.MOSTLY_BF16,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0,
}
_WEIGHT_TYPE = {
    LlamaFileType.ALL_F32: GGMLQuantizationType.F32,
    LlamaFileType.MOSTLY_F16: GGMLQuantizationType.F16,
    LlamaFileType.MOSTLY_BF16: GGMLQuantizationType.BF16,
    LlamaFileType.MOSTLY_Q8_0: GGMLQuantizationType.Q8_0,
}
_QK_WEIGHTS = ("q_proj.weight", "k_proj.weight")
_SKIPPED = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")
_CHUNK_VALUES = 1 << 19  # values encoded at a time by one thread: its temporaries stay in cache
Rows = Callable[[int, int], np.ndarray]  # (start, stop) -> rows in the checkpoint's dtype (bf16 as uint16 bits)


@dataclass(frozen=True)
class ConvertedTensor:
    name: str  # in the GGUF
    shape: tuple[int, ...]  # numpy order: rows first
    qtype: GGMLQuantizationType
    rows: Rows  # the checkpoint's values in their stored dtype, rows in the GGUF's order
    dtype: str = "F32"  # the stored dtype of `rows`, in safetensors spelling
    source: CheckpointTensor | None = None  # the GGUF's bytes, whole in the checkpoint: a plain byte copy

    @property
    def n_bytes(self) -> int:
        shape = quant_shape_to_byte_shape(self.shape, self.qtype) if self.qtype not in _FLOAT_NP else self.shape
        itemsize = np.dtype(_FLOAT_NP.get(self.qtype, np.uint8)).itemsize
        return math.prod(shape) * itemsize

    @property
    def np_dtype(self):
        return _FLOAT_NP.get(self.qtype, np.uint8)

    @property
    def n_rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    def chunks(self) -> list[tuple[int, int]]:
        """Row ranges of at most about _CHUNK_VALUES values each. Whole rows, and so for Q8_0 whole blocks: a
        row is whole blocks (_stored_type), so each chunk's bytes are the same wherever the tensor is cut."""
        per_row = max(1, math.prod(self.shape) // self.n_rows)
        step = max(1, _CHUNK_VALUES // per_row)
        return [(start, min(self.n_rows, start + step)) for start in range(0, self.n_rows, step)]

    def encode(self, start: int, stop: int) -> np.ndarray:
        """The stored bytes of rows start:stop."""
        return encode(self.rows(start, stop), self.dtype, self.qtype)


_FLOAT_NP = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}


def checkpoint_architecture(checkpoint: Checkpoint) -> Architecture:
    arch = architecture_of(checkpoint.architecture)
    given = checkpoint.config.get("architectures")
    if not checkpoint.architecture and given is not None:
        raise ModelConfigError(f"config.json's architectures is {given!r:.80}, not a list of class names")
    if arch is None or not arch.convertible:
        raise UnsupportedModelError(
            f"architecture {checkpoint.architecture or '(none in config.json)'!r} is not supported",
            hint=f"quantkit converts {' and '.join(a.hf_class for a in CONVERTIBLE)} checkpoints "
                 "(the DeepSeek-R1-Distill family)",
        )
    return arch


def plan_gguf_tensors(checkpoint: Checkpoint, ftype: LlamaFileType) -> list[ConvertedTensor]:
    """What the GGUF will hold, in order; nothing is read yet."""
    arch = checkpoint_architecture(checkpoint)
    hp = ConfigShape.of(checkpoint.config, str(checkpoint.folder))
    names = get_tensor_name_map(arch.model_arch, hp.n_layer)
    plans = [_rope_freqs_plan(checkpoint.config, hp)] if llama3_rope(checkpoint.config) else []
    for hf_name, info in checkpoint.tensors.items():
        if hf_name.endswith(_SKIPPED):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise CheckpointError(f"tensor {hf_name} has no llama.cpp name for {arch.name}",
                                  hint="the checkpoint does not look like a plain " + checkpoint.architecture)
        _check_shape(hf_name, info.shape, hp)
        permute = hf_name.endswith(_QK_WEIGHTS) and arch.permuted_qk
        qtype = _stored_type(name, info.shape, ftype)
        copy = qtype == SAME_BITS.get(info.dtype) and not permute
        rows = _reader(checkpoint, hf_name, hp if permute else None)
        plans.append(ConvertedTensor(name, info.shape, qtype, rows, info.dtype, info if copy else None))
    _check_complete(checkpoint, plans, hp)
    return plans


def _stored_type(name: str, shape: tuple[int, ...], ftype: LlamaFileType) -> GGMLQuantizationType:
    # llama.cpp's rules: vectors and norms stay F32; a row that is not whole blocks falls back to F16
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return GGMLQuantizationType.F32
    qtype = _WEIGHT_TYPE[ftype]
    if qtype not in _FLOAT_NP and qtype != GGMLQuantizationType.BF16 and shape[-1] % GGML_QUANT_SIZES[qtype][0]:
        return GGMLQuantizationType.F16
    return qtype


def _reader(checkpoint: Checkpoint, hf_name: str, permute_hp: ConfigShape | None) -> Rows:
    n_heads = None
    if permute_hp is not None and hf_name.endswith("q_proj.weight"):
        n_heads = permute_hp.n_head
    elif permute_hp is not None and hf_name.endswith("k_proj.weight"):
        n_heads = permute_hp.n_head_kv
    order = None if n_heads is None else _permute(np.arange(checkpoint.tensors[hf_name].shape[0]), n_heads)

    def rows(start: int, stop: int) -> np.ndarray:
        data = checkpoint.read(hf_name)
        if order is not None:  # the permutation moves whole rows: gather this chunk's
            return data[order[start:stop]]
        return data[start:stop] if data.ndim > 1 else data

    return rows


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows to llama.cpp's interleaved pairs (as convert_hf_to_gguf.py does)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_theta(config: dict) -> float | None:
    theta = config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta"))
    return None if theta is None else float(theta)


def _rope_freqs_plan(config: dict, hp: ConfigShape) -> ConvertedTensor:
    rope = llama3_rope(config) or {}
    factors = llama3_rope_factors(rope_theta(config) or 10000.0, hp.head_dim, rope)
    name = TENSOR_NAMES[MODEL_TENSOR.ROPE_FREQS] + ".weight"
    return ConvertedTensor(name, factors.shape, GGMLQuantizationType.F32, lambda start, stop: factors, "F32")


def llama3_rope_factors(base: float, dim: int, rope: dict) -> np.ndarray:
    """Llama-3.1's per-frequency rope scaling (the `rope_freqs` tensor llama.cpp multiplies in).

    Computed in float32 throughout, as the reference converter does, so the factors are bit-identical."""
    f32 = np.float32
    factor = f32(rope.get("factor", 8.0))
    low, high = f32(rope.get("low_freq_factor", 1.0)), f32(rope.get("high_freq_factor", 4.0))
    old_ctx = f32(rope.get("original_max_position_embeddings", 8192))
    freqs = f32(1.0) / (f32(base) ** (np.arange(0, dim, 2, dtype=f32) / f32(dim)))
    wavelen = f32(2 * math.pi) / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = f32(1.0) / ((f32(1.0) - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / high, f32(1.0), np.where(wavelen > old_ctx / low, factor, mid))
    return out.astype(f32)


_EXPECTED: tuple[tuple[str, Callable[[ConfigShape], tuple[int, ...]]], ...] = (
    (r"embed_tokens\.weight$|lm_head\.weight$", lambda h: (h.n_vocab, h.n_embd)),
    (r"q_proj\.weight$", lambda h: (h.n_head * h.head_dim, h.n_embd)),
    (r"[kv]_proj\.weight$", lambda h: (h.n_head_kv * h.head_dim, h.n_embd)),
    (r"o_proj\.weight$", lambda h: (h.n_embd, h.n_head * h.head_dim)),
    (r"q_proj\.bias$", lambda h: (h.n_head * h.head_dim,)),
    (r"[kv]_proj\.bias$", lambda h: (h.n_head_kv * h.head_dim,)),
    (r"(gate|up)_proj\.weight$", lambda h: (h.n_ff, h.n_embd)),
    (r"down_proj\.weight$", lambda h: (h.n_embd, h.n_ff)),
    (r"norm\.weight$", lambda h: (h.n_embd,)),
)


def _check_shape(hf_name: str, shape: tuple[int, ...], hp: ConfigShape) -> None:
    for pattern, expected in _EXPECTED:
        if re.search(pattern, hf_name):
            want = expected(hp)
            if tuple(shape) != want:
                raise CheckpointError(
                    f"tensor {hf_name} has shape {list(shape)} but config.json implies {list(want)}",
                    hint="config.json and the weights do not belong together: download the checkpoint again",
                )
            return


def _check_complete(checkpoint: Checkpoint, plans: list[ConvertedTensor], hp: ConfigShape) -> None:
    have = {p.name for p in plans}
    token_embd = TENSOR_NAMES[MODEL_TENSOR.TOKEN_EMBD] + ".weight"
    wanted = [token_embd] + [TENSOR_NAMES[t].format(bid=b) + ".weight" for b in range(hp.n_layer)
                             for t in (MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V,
                                       MODEL_TENSOR.ATTN_OUT, MODEL_TENSOR.FFN_DOWN)]
    missing = [n for n in wanted if n not in have]
    if missing:
        raise CheckpointError(f"{checkpoint.folder} lacks {len(missing)} tensor(s) the config implies, "
                              f"e.g. {missing[0]}", hint="the download may be incomplete: fetch it again")
