"""What estimate-memory needs to know about a model, from any kind of target: a size label of the family, a Hub
repo id (config.json only), a local Hugging Face folder, a local GGUF, or a remote GGUF (header only)."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import MODEL_ARCH
from gguf import GGMLQuantizationType as T

from ..errors import FetchError, InvalidArgumentError, ModelConfigError, UnsupportedModelError
from ..hub import endpoint, hub_settings
from ..models import (R1, R1_DISTILLS, Architecture, ConfigShape, ModelShape, architecture_named, architecture_of,
                      find_model, llama3_rope)
from ..gguf.header import GGUFHeader, HeaderTensor, read_remote_header
from ..gguf.reader import GGUFFile
from ..gguf.shards import read_model_header

log = logging.getLogger(__name__)

# A header estimate for targets known only by their config: llama.cpp's own vocab-only GGUFs
# (models/ggml-vocab-qwen2.gguf, ggml-vocab-llama-bpe.gguf) hold 151,387 / 128,256 tokens with their merges and
# types in 7.0 / 7.5 MB, about 48-58 bytes a token; 56 bytes a token plus the chat template is within a few
# hundred KB of the real thing, 0.01% of a 1.5B model.
_HEADER_BYTES_PER_TOKEN = 56
_HEADER_FIXED = 64 << 10


@dataclass(frozen=True, kw_only=True)
class ModelSpec(ConfigShape):
    """A model's shape (ConfigShape's fields) and what estimate-memory needs besides: its tensors, header size
    and, for DeepSeek-V3's MoE with latent attention, the expert and cache dimensions."""

    source: str  # what the user named
    kind: str  # "label" | "config" | "gguf" | "remote-gguf"
    name: str
    arch: str
    max_context: int
    tensors: list[HeaderTensor]
    header_bytes_estimate: int
    n_expert: int = 0
    kv_lora_rank: int = 0  # MLA (deepseek2): the cache holds kv_lora_rank + rope dims per token, no V
    rope_dim: int = 0
    header: GGUFHeader | None = None  # when read from a GGUF
    file_type: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)


def _dense_tensors(arch: Architecture, n_layer: int, n_embd: int, n_head: int, n_head_kv: int, head_dim: int, n_ff: int,
                   n_vocab: int, tied: bool, rope_freqs: bool) -> list[HeaderTensor]:
    """The tensors convert_hf_to_gguf.py writes for a llama/qwen2 checkpoint (2-D in F16, 1-D in F32)."""
    q, kv = n_head * head_dim, n_head_kv * head_dim
    ts = [HeaderTensor("token_embd.weight", (n_embd, n_vocab), T.F16),
          HeaderTensor("output_norm.weight", (n_embd,), T.F32)]
    if not tied:
        ts.append(HeaderTensor("output.weight", (n_embd, n_vocab), T.F16))
    if rope_freqs:
        ts.append(HeaderTensor("rope_freqs.weight", (head_dim // 2,), T.F32))
    for i in range(n_layer):
        p = f"blk.{i}."
        ts += [HeaderTensor(p + "attn_norm.weight", (n_embd,), T.F32),
               HeaderTensor(p + "attn_q.weight", (n_embd, q), T.F16),
               HeaderTensor(p + "attn_k.weight", (n_embd, kv), T.F16),
               HeaderTensor(p + "attn_v.weight", (n_embd, kv), T.F16),
               HeaderTensor(p + "attn_output.weight", (q, n_embd), T.F16),
               HeaderTensor(p + "ffn_norm.weight", (n_embd,), T.F32),
               HeaderTensor(p + "ffn_gate.weight", (n_embd, n_ff), T.F16),
               HeaderTensor(p + "ffn_up.weight", (n_embd, n_ff), T.F16),
               HeaderTensor(p + "ffn_down.weight", (n_ff, n_embd), T.F16)]
        if arch.qkv_bias:
            ts += [HeaderTensor(p + "attn_q.bias", (q,), T.F32), HeaderTensor(p + "attn_k.bias", (kv,), T.F32),
                   HeaderTensor(p + "attn_v.bias", (kv,), T.F32)]
    return ts


def _deepseek_tensors(cfg: dict) -> list[HeaderTensor]:
    """DeepSeek-V3/R1 as current convert_hf_to_gguf.py writes it (MLA with split attn_k_b/attn_v_b; the MTP
    layer left out)."""
    n_embd, n_layer, n_head = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    q_lora, kv_lora = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    nope, rope, v_dim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    n_vocab, n_ff, n_ff_exp = cfg["vocab_size"], cfg["intermediate_size"], cfg["moe_intermediate_size"]
    n_exp, n_shared, first_dense = cfg["n_routed_experts"], cfg.get("n_shared_experts", 1), cfg.get("first_k_dense_replace", 0)
    ts = [HeaderTensor("token_embd.weight", (n_embd, n_vocab), T.BF16),
          HeaderTensor("output_norm.weight", (n_embd,), T.F32),
          HeaderTensor("output.weight", (n_embd, n_vocab), T.BF16)]
    for i in range(n_layer):
        p = f"blk.{i}."
        ts += [HeaderTensor(p + "attn_norm.weight", (n_embd,), T.F32),
               HeaderTensor(p + "attn_q_a_norm.weight", (q_lora,), T.F32),
               HeaderTensor(p + "attn_kv_a_norm.weight", (kv_lora,), T.F32),
               HeaderTensor(p + "attn_q_a.weight", (n_embd, q_lora), T.BF16),
               HeaderTensor(p + "attn_q_b.weight", (q_lora, n_head * (nope + rope)), T.BF16),
               HeaderTensor(p + "attn_kv_a_mqa.weight", (n_embd, kv_lora + rope), T.BF16),
               HeaderTensor(p + "attn_k_b.weight", (nope, kv_lora, n_head), T.BF16),
               HeaderTensor(p + "attn_v_b.weight", (kv_lora, v_dim, n_head), T.BF16),
               HeaderTensor(p + "attn_output.weight", (n_head * v_dim, n_embd), T.BF16),
               HeaderTensor(p + "ffn_norm.weight", (n_embd,), T.F32)]
        if i < first_dense:
            ts += [HeaderTensor(p + "ffn_gate.weight", (n_embd, n_ff), T.BF16),
                   HeaderTensor(p + "ffn_up.weight", (n_embd, n_ff), T.BF16),
                   HeaderTensor(p + "ffn_down.weight", (n_ff, n_embd), T.BF16)]
        else:
            sh = n_ff_exp * n_shared
            ts += [HeaderTensor(p + "ffn_gate_inp.weight", (n_embd, n_exp), T.F32),
                   HeaderTensor(p + "exp_probs_b.bias", (n_exp,), T.F32),
                   HeaderTensor(p + "ffn_gate_exps.weight", (n_embd, n_ff_exp, n_exp), T.BF16),
                   HeaderTensor(p + "ffn_up_exps.weight", (n_embd, n_ff_exp, n_exp), T.BF16),
                   HeaderTensor(p + "ffn_down_exps.weight", (n_ff_exp, n_embd, n_exp), T.BF16),
                   HeaderTensor(p + "ffn_gate_shexp.weight", (n_embd, sh), T.BF16),
                   HeaderTensor(p + "ffn_up_shexp.weight", (n_embd, sh), T.BF16),
                   HeaderTensor(p + "ffn_down_shexp.weight", (sh, n_embd), T.BF16)]
    return ts


# DeepSeek-R1's config.json, the fields the estimate needs (published in deepseek-ai/DeepSeek-R1)
R1_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168, "num_hidden_layers": 61,
    "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
    "first_k_dense_replace": 3, "num_experts_per_tok": 8, "max_position_embeddings": 163840,
}


def _shape_config(m: ModelShape) -> dict:
    if m is R1:
        return dict(R1_CONFIG)
    return {"architectures": [m.architecture], "hidden_size": m.n_embd, "num_hidden_layers": m.n_layer,
            "num_attention_heads": m.n_head, "num_key_value_heads": m.n_head_kv, "intermediate_size": m.n_ff,
            "vocab_size": m.n_vocab, "tie_word_embeddings": m.tied_embeddings, "head_dim": m.head_dim,
            "max_position_embeddings": m.max_context,
            "rope_scaling": {"rope_type": "llama3"} if m.arch.model_arch == MODEL_ARCH.LLAMA else None}


def from_config(cfg: dict, source: str, kind: str, name: str) -> ModelSpec:
    archs = cfg.get("architectures")
    first = archs[0] if isinstance(archs, list) and archs else None
    arch = architecture_of(first)
    if arch is None:
        raise UnsupportedModelError(f"{source}: architecture {first or '(none)'} is not supported")
    if arch.model_arch == MODEL_ARCH.DEEPSEEK2:
        return _deepseek_spec(cfg, source, kind, name, arch)
    shape = ConfigShape.of(cfg, source)
    tensors = _dense_tensors(arch, shape.n_layer, shape.n_embd, shape.n_head, shape.n_head_kv, shape.head_dim,
                             shape.n_ff, shape.n_vocab, bool(cfg.get("tie_word_embeddings", False)),
                             arch.model_arch == MODEL_ARCH.LLAMA and llama3_rope(cfg) is not None)
    try:
        max_context = int(cfg.get("max_position_embeddings") or 4096)
    except (TypeError, ValueError):
        raise ModelConfigError(f"{source}: config.json has a bad max_position_embeddings") from None
    return ModelSpec(**vars(shape), source=source, kind=kind, name=name, arch=arch.name, max_context=max_context,
                     tensors=tensors, header_bytes_estimate=_header_estimate(shape.n_vocab))


def _header_estimate(n_vocab: int) -> int:
    return _HEADER_FIXED + _HEADER_BYTES_PER_TOKEN * n_vocab


def _deepseek_spec(cfg: dict, source: str, kind: str, name: str, arch: Architecture) -> ModelSpec:
    try:
        n_vocab = int(cfg["vocab_size"])
        return ModelSpec(n_layer=int(cfg["num_hidden_layers"]), n_embd=int(cfg["hidden_size"]),
                         n_head=int(cfg["num_attention_heads"]), n_head_kv=1,
                         head_dim=int(cfg["qk_nope_head_dim"]) + int(cfg["qk_rope_head_dim"]),
                         n_ff=int(cfg["intermediate_size"]), n_vocab=n_vocab, source=source, kind=kind, name=name,
                         arch=arch.name, max_context=int(cfg.get("max_position_embeddings", 4096)),
                         tensors=_deepseek_tensors(cfg), header_bytes_estimate=_header_estimate(n_vocab),
                         n_expert=int(cfg["n_routed_experts"]), kv_lora_rank=int(cfg["kv_lora_rank"]),
                         rope_dim=int(cfg["qk_rope_head_dim"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelConfigError(f"{source}: config.json lacks or has a bad value for {e}") from None


def from_header(h: GGUFHeader, source: str, kind: str) -> ModelSpec:
    from ..gguf.reader import file_type_name

    arch = h.get("general.architecture")
    if architecture_named(arch) is None:
        raise UnsupportedModelError(f"{source}: architecture {arch!r} is not supported")
    n_head = int(h.arch("attention.head_count", 0) or 0)
    n_embd = int(h.arch("embedding_length", 0) or 0)
    n_layer = int(h.arch("block_count", 0) or 0)
    if isinstance(h.arch("attention.head_count_kv"), list) or isinstance(n_head, list):
        raise UnsupportedModelError(f"{source}: per-layer head counts are not supported")
    n_head_kv = int(h.arch("attention.head_count_kv", n_head) or n_head)
    if not (n_head and n_embd and n_layer):
        raise UnsupportedModelError(f"{source} lacks the model's shape ({arch}.block_count/embedding_length/...)")
    head_dim = int(h.arch("attention.key_length", 0) or n_embd // n_head)
    n_vocab = int(h.arch("vocab_size", 0) or h.arrays.get("tokenizer.ggml.tokens", 0))
    if not n_vocab:
        embd = next((t for t in h.tensors if t.name == "token_embd.weight"), None)
        n_vocab = embd.shape[1] if embd else 0
    name = h.get("general.name") or Path(source).stem
    return ModelSpec(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
                     n_ff=int(h.arch("feed_forward_length", 0) or 0), n_vocab=n_vocab, source=source, kind=kind,
                     name=name, arch=arch, max_context=int(h.arch("context_length", 4096) or 4096),
                     tensors=list(h.tensors), header_bytes_estimate=h.header_bytes,
                     n_expert=int(h.arch("expert_count", 0) or 0),
                     kv_lora_rank=int(h.arch("attention.kv_lora_rank", 0) or 0),
                     rope_dim=int(h.arch("rope.dimension_count", 0) or 0), header=h,
                     file_type=file_type_name(h.get("general.file_type")))


_REMOTE = re.compile(r"^[\w.-]+/[\w.-]+/.+\.gguf$")


def _hub_headers() -> dict[str, str]:
    try:
        from huggingface_hub.utils import build_hf_headers

        return {k: v for k, v in build_hf_headers().items() if k.lower() in ("authorization", "user-agent")}
    except Exception:  # no token, or an older hub library: anonymous access
        return {}


def resolve_target(target: str | GGUFFile | ModelSpec) -> ModelSpec:
    """Turn what the user typed into a ModelSpec, reading as little as possible; a local GGUF already read
    (a GGUFFile) or a ModelSpec is not read again."""
    if isinstance(target, ModelSpec):
        return target
    if isinstance(target, GGUFFile):
        return from_header(target.header, str(target.path), "gguf")
    target = str(target).strip()
    if target.startswith(("http://", "https://")):
        return from_header(read_remote_header(target, _hub_headers()), target, "remote-gguf")
    path = Path(target).expanduser()
    if path.exists():
        if path.is_dir():
            cfg_path = path / "config.json"
            if not cfg_path.exists():
                raise ModelConfigError(f"{path} has no config.json")
            return from_config(_load_json(cfg_path), str(path), "config", path.name)
        if path.suffix == ".json":
            return from_config(_load_json(path), str(path), "config", path.parent.name)
        return from_header(read_model_header(path), str(path), "gguf")
    if target.lower().endswith(".gguf") and _REMOTE.match(target):
        repo, _, file = target.partition("/")[2].partition("/")
        repo_id = target.split("/")[0] + "/" + repo
        url = f"{endpoint()}/{repo_id}/resolve/main/{file}"
        return from_header(read_remote_header(url, _hub_headers()), target, "remote-gguf")
    known = find_model(target)
    if known is not None:
        return from_config(_shape_config(known), target, "label", known.name)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", target):
        return from_config(_fetch_config(target), target, "config", target.split("/")[1])
    labels = ", ".join(m.label for m in (*R1_DISTILLS, R1))
    raise InvalidArgumentError(f"unknown model {target!r}",
                               hint=f"use a size label ({labels}), a Hub repo id, a model folder or a .gguf file/URL")


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelConfigError(f"{path} is not valid JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path} is not a JSON object")
    return data


def _fetch_config(repo_id: str) -> dict:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        path = hf_hub_download(repo_id, "config.json", **hub_settings())
    except RepositoryNotFoundError:
        raise InvalidArgumentError(f"no model {repo_id!r} on the Hub", hint="check the repo id") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise FetchError(f"cannot fetch config.json of {repo_id}: {str(e).splitlines()[0][:120]}") from None
    return _load_json(Path(path))
