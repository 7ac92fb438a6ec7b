"""Which ggml type libllama gives each tensor for a file type: a port of `llama_tensor_get_type` in llama.cpp's
src/llama-quant.cpp (llama-cpp-python 0.3.36), limited to the file types quantkit offers and to dense and MoE
llama/qwen2/deepseek2 models. Tests check it against libllama's own choices tensor by tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from ..errors import InvalidArgumentError
from ..gguf.header import HeaderTensor, layer_of

# llama_ftype_get_default_type, keyed by quantkit's file type names
DEFAULT_TYPE: dict[str, T] = {
    "Q4_0": T.Q4_0, "Q4_1": T.Q4_1, "Q5_0": T.Q5_0, "Q5_1": T.Q5_1, "Q8_0": T.Q8_0,
    "F16": T.F16, "BF16": T.BF16, "F32": T.F32,
    "Q2_K": T.Q2_K, "Q3_K_S": T.Q3_K, "Q3_K_M": T.Q3_K, "Q3_K_L": T.Q3_K,
    "Q4_K_S": T.Q4_K, "Q4_K_M": T.Q4_K, "Q5_K_S": T.Q5_K, "Q5_K_M": T.Q5_K, "Q6_K": T.Q6_K,
    "Q2_K_S": T.Q2_K, "IQ3_XS": T.IQ3_S, "IQ2_XXS": T.IQ2_XXS, "IQ2_XS": T.IQ2_XS, "IQ2_S": T.IQ2_XS,
    "IQ2_M": T.IQ2_S, "IQ3_XXS": T.IQ3_XXS, "IQ1_S": T.IQ1_S, "IQ1_M": T.IQ1_M, "IQ4_NL": T.IQ4_NL,
    "IQ4_XS": T.IQ4_XS, "IQ3_S": T.IQ3_S, "IQ3_M": T.IQ3_S,
}
# the file types whose non-attention tensors libllama handles in one branch (the IQ1/IQ2 family)
_IQ12 = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
_UNQUANTIZED = {T.F32, T.F16, T.BF16}

# tensor_type_fallback: a 256-block type whose row length does not divide falls back to a 32-block one
_FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0,
             T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL, T.IQ2_XXS: T.IQ4_NL, T.IQ2_XS: T.IQ4_NL, T.IQ2_S: T.IQ4_NL,
             T.IQ3_XXS: T.IQ4_NL, T.IQ3_S: T.IQ4_NL, T.IQ4_XS: T.IQ4_NL}

@dataclass(frozen=True)
class QuantModel:
    """The model facts libllama's choices depend on."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0
    is_70b: bool = False  # libllama's LLM_TYPE_70B (llama: 80 layers with GQA; qwen2: 80 layers)

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


def model_type_is_70b(arch: str, n_layer: int, n_head: int, n_head_kv: int, n_expert: int = 0) -> bool:
    if arch == "llama":
        return n_expert != 8 and n_layer == 80 and n_head != n_head_kv
    return arch == "qwen2" and n_layer == 80


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def allows_quantization(t: HeaderTensor) -> bool:
    """tensor_allows_quantization for the tensors of llama/qwen2/deepseek2 models."""
    n = t.name
    dims = list(t.shape)
    while len(dims) > 1 and dims[-1] == 1:  # ggml_n_dims ignores trailing ones
        dims.pop()
    if len(dims) < 2:
        return False
    return (n.endswith("weight") and "_norm.weight" not in n and "ffn_gate_inp.weight" not in n
            and "position_embd" not in n and "token_types" not in n)


def sort_like_libllama(tensors: list[HeaderTensor]) -> list[HeaderTensor]:
    """libllama visits tensors ordered by layer number (non-layer tensors first), then by name."""
    def key(t: HeaderTensor):
        layer = layer_of(t.name)
        return (-1 if layer is None else layer, t.name)

    return sorted(tensors, key=key)


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def choose_types(model: QuantModel, tensors: list[HeaderTensor], ftype: str, has_imatrix: bool = False
                 ) -> dict[str, T]:
    """Name → the type libllama writes for each tensor when quantizing `tensors` to file type `ftype`
    (`has_imatrix`: with an importance matrix, which changes a few of libllama's choices)."""
    if ftype not in DEFAULT_TYPE:
        raise InvalidArgumentError(f"estimate-memory does not model file type {ftype}",
                                   hint=f"use one of {', '.join(DEFAULT_TYPE)}")
    default = DEFAULT_TYPE[ftype]
    ordered = sort_like_libllama(tensors)
    cats = {t.name: _category(t.name) for t in ordered}
    n_attn_v = sum(1 for c in cats.values() if c == "attn_v")
    tied = "output" not in cats.values()
    state = {"attn_v": 0, "ffn_down": 0, "ffn_gate": 0, "ffn_up": 0, "has_imatrix": has_imatrix}
    out: dict[str, T] = {}
    for t in ordered:
        if not allows_quantization(t) or default in _UNQUANTIZED:
            out[t.name] = t.type if not allows_quantization(t) else default
            continue
        new = _rules(model, t, cats[t.name], ftype, default, tied, state, n_attn_v)
        out[t.name] = _fallback(t, new)
    return out


def _layer(model: QuantModel, counter: int, name: str) -> int:
    if max(1, model.n_expert) > 1:
        layer = layer_of(name)
        return counter if layer is None else layer
    return counter


def _rules(m: QuantModel, t: HeaderTensor, cat: str, ftype: str, new: T, tied: bool, state: dict, n_attn_v: int) -> T:
    imatrix = state["has_imatrix"]
    if cat == "output" or (tied and cat == "token_embd"):
        block = GGML_QUANT_SIZES[new][0]
        if t.shape[0] % block:
            return T.Q8_0
        if ftype in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"):
            return T.Q5_K
        return new if new == T.Q8_0 else T.Q6_K
    if cat == "token_embd":
        if ftype in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return T.Q2_K
        if ftype in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return T.IQ3_S
        return new
    if ftype in _IQ12:
        two_s = ftype in ("IQ2_S", "IQ2_M")
        if cat == "attn_v":
            state["attn_v"] += 1
            if m.n_gqa >= 4 or m.n_expert >= 4:
                return T.Q4_K
            return T.IQ3_S if two_s else T.Q2_K
        if m.n_expert == 8 and cat == "attn_k":
            return T.Q4_K
        if cat == "ffn_down":
            i = state["ffn_down"]
            state["ffn_down"] += 1
            if i < m.n_layer // 8:
                return T.IQ3_S if two_s else T.Q2_K
            return new
        if cat == "attn_output":
            if m.n_expert == 8:
                return T.Q5_K
            if ftype in ("IQ1_S", "IQ1_M"):
                return T.IQ2_XXS
            if two_s:
                return T.IQ3_S
        return new
    if cat == "attn_v":
        i = state["attn_v"]
        if ftype == "Q2_K":
            new = T.Q4_K if m.n_gqa >= 4 else T.Q3_K
        elif ftype == "Q2_K_S" and m.n_gqa >= 4:
            new = T.Q4_K
        elif ftype == "IQ3_XXS":
            new = T.Q4_K if m.n_gqa >= 4 else T.IQ3_XXS if imatrix else T.IQ3_S
        elif ftype in ("IQ3_XS", "IQ3_S") and m.n_gqa >= 4:
            new = T.Q4_K
        elif ftype == "IQ3_M":
            new = T.Q4_K
        elif ftype == "Q3_K_M":
            new = T.Q5_K if i < 2 else T.Q4_K
        elif ftype == "Q3_K_L":
            new = T.Q5_K
        elif ftype in ("IQ4_NL", "IQ4_XS") and m.n_gqa >= 4:
            new = T.Q5_K
        elif ftype in ("Q4_K_M", "Q5_K_M") and _more_bits(i, n_attn_v):
            new = T.Q6_K
        elif ftype == "Q4_K_S" and i < 4:
            new = T.Q5_K
        if m.is_70b and new in (T.Q3_K, T.Q4_K):
            new = T.Q5_K
        if m.n_expert == 8:
            new = T.Q8_0
        state["attn_v"] += 1
        return new
    if cat == "attn_k":
        if m.n_expert == 8:
            return T.Q8_0
        return {"IQ3_XS": T.IQ3_XXS, "IQ3_XXS": T.IQ2_S}.get(ftype, new)
    if cat == "attn_q":
        return {"IQ3_XS": T.IQ3_XXS, "IQ3_XXS": T.IQ2_S}.get(ftype, new)
    if cat == "ffn_down":
        i, n = _layer(m, state["ffn_down"], t.name), m.n_layer
        if ftype == "Q2_K":
            new = T.Q3_K
        elif ftype == "Q2_K_S":
            if i < n // 8:
                new = T.Q4_K
        elif ftype == "IQ3_XXS" and not imatrix:
            new = T.Q4_K if i < n // 8 else T.Q3_K
        elif ftype == "Q3_K_M":
            new = T.Q5_K if i < n // 16 else T.Q4_K
        elif ftype == "IQ3_M" and (i < n // 8 or (m.n_expert == 8 and _more_bits(i, n))):
            new = T.Q4_K
        elif ftype == "Q3_K_L":
            new = T.Q5_K
        elif ftype == "Q4_K_M":
            if _more_bits(i, n):
                new = T.Q6_K
        elif i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not imatrix:
            new = T.Q5_K
        elif ftype == "Q5_K_M" and _more_bits(i, n):
            new = T.Q6_K
        elif ftype == "Q4_K_S" and i < n // 8:
            new = T.Q5_K
        elif ftype in ("Q4_0", "Q5_0") and imatrix and i < n // 8:
            new = T.Q4_1 if ftype == "Q4_0" else T.Q5_1
        state["ffn_down"] += 1
        return new
    if cat == "attn_output":
        if m.n_expert == 8:
            if ftype in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S",
                         "IQ3_M", "IQ4_XS"):
                new = T.Q5_K
        else:
            new = {"Q2_K": T.Q3_K, "IQ3_XXS": T.IQ3_S, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K, "IQ3_M": T.Q4_K
                   }.get(ftype, new)
        return new
    if cat in ("ffn_gate", "ffn_up"):
        i, n = _layer(m, state[cat], t.name), m.n_layer
        state[cat] += 1
        if ftype == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
            return T.IQ3_XXS
        return new
    return new


def _fallback(t: HeaderTensor, new: T) -> T:
    ncols = t.shape[0]
    block = GGML_QUANT_SIZES[new][0]
    if ncols % block == 0:
        return new
    if new in _FALLBACK:
        new = _FALLBACK[new]
    elif block > 32:
        raise InvalidArgumentError(f"libllama has no fallback for {new.name} on {t.name}")
    if ncols % GGML_QUANT_SIZES[new][0]:
        return T.F16
    return new
