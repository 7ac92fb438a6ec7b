"""The DeepSeek-R1-Distill family as data: size labels, Hub repo ids and architecture shapes.

Shapes are the published config.json values (see shared/REFERENCE.md); they let `estimate-memory` answer
without downloading anything, and let `convert` accept a size label in place of a repo id.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidArgumentError


@dataclass(frozen=True)
class ModelShape:
    label: str
    repo_id: str
    architecture: str  # HF architectures[0]
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    head_dim: int = 128
    tied_embeddings: bool = False
    max_context: int = 131072

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[-1]

    @property
    def gguf_arch(self) -> str:
        return {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}.get(self.architecture, "deepseek2")


R1_DISTILLS: tuple[ModelShape, ...] = (
    ModelShape("1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "Qwen2ForCausalLM", 28, 1536, 12, 2, 8960, 151936),
    ModelShape("7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "Qwen2ForCausalLM", 28, 3584, 28, 4, 18944, 152064),
    ModelShape("8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "LlamaForCausalLM", 32, 4096, 32, 8, 14336, 128256),
    ModelShape("14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "Qwen2ForCausalLM", 48, 5120, 40, 8, 13824, 152064),
    ModelShape("32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "Qwen2ForCausalLM", 64, 5120, 40, 8, 27648, 152064),
    ModelShape("70B", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "LlamaForCausalLM", 80, 8192, 64, 8, 28672, 128256),
)

# DeepSeek-R1 itself (MoE with multi-head latent attention): only estimate-memory speaks of it.
R1 = ModelShape("671B", "deepseek-ai/DeepSeek-R1", "DeepseekV3ForCausalLM", 61, 7168, 128, 128, 18432, 129280,
                max_context=163840)

_BY_KEY = {m.label.lower(): m for m in (*R1_DISTILLS, R1)}
_BY_KEY.update({m.repo_id.lower(): m for m in (*R1_DISTILLS, R1)})
_BY_KEY.update({m.name.lower(): m for m in (*R1_DISTILLS, R1)})


def find_model(key: str) -> ModelShape | None:
    """A family member by size label ("7B"), repo id or model name; None if `key` names none of them."""
    return _BY_KEY.get(key.strip().lower())


def resolve_model(key: str) -> ModelShape:
    model = find_model(key)
    if model is None:
        labels = ", ".join(m.label for m in (*R1_DISTILLS, R1))
        raise InvalidArgumentError(f"unknown model {key!r}", hint=f"use a size label ({labels}) or a repo id")
    return model
