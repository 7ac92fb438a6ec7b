"""The DeepSeek-R1-Distill family as data: the architectures quantkit knows, size labels, Hub repo ids and
architecture shapes.

Shapes are the published config.json values (see shared/REFERENCE.md); they let `estimate-memory` answer
without downloading anything, and let `convert` accept a size label in place of a repo id.
"""
from __future__ import annotations

from dataclasses import dataclass

from gguf import MODEL_ARCH, MODEL_ARCH_NAMES

from .errors import ModelConfigError


# DeepSeek's rules for R1, the defaults of chat, serve, eval and the recipes: temperature 0.6, top-p 0.95 (with
# llama.cpp's and Ollama's top-k of 40 in front, see runtime.Sampling), no system prompt, and for math this line
# after the problem in the user's message.
R1_TEMPERATURE = 0.6
R1_TOP_P = 0.95
R1_TOP_K = 40
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Architecture:
    """A Hugging Face architecture as llama.cpp knows it (the one table every module reads)."""

    hf_class: str  # config.json's architectures[0]
    model_type: str  # config.json's model_type
    model_arch: MODEL_ARCH  # gguf's own name for it
    permuted_qk: bool  # llama.cpp's converter turns q/k rows from rotate-half into interleaved pairs
    qkv_bias: bool  # the HF class always has q/k/v biases
    convertible: bool  # convert and export speak it; False: estimate-memory only

    @property
    def name(self) -> str:
        """llama.cpp's name: `general.architecture` and the prefix of the architecture's keys."""
        return MODEL_ARCH_NAMES[self.model_arch]


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("LlamaForCausalLM", "llama", MODEL_ARCH.LLAMA, permuted_qk=True, qkv_bias=False, convertible=True),
    Architecture("Qwen2ForCausalLM", "qwen2", MODEL_ARCH.QWEN2, permuted_qk=False, qkv_bias=True, convertible=True),
    # DeepSeek-R1 itself (MoE with multi-head latent attention)
    Architecture("DeepseekV3ForCausalLM", "deepseek_v3", MODEL_ARCH.DEEPSEEK2, permuted_qk=False, qkv_bias=False,
                 convertible=False),
)
CONVERTIBLE: tuple[Architecture, ...] = tuple(a for a in ARCHITECTURES if a.convertible)
_BY_HF_CLASS = {a.hf_class: a for a in ARCHITECTURES}
_BY_NAME = {a.name: a for a in ARCHITECTURES}


def architecture_of(hf_class: object) -> Architecture | None:
    """The architecture of config.json's architectures[0]; None when quantkit does not know it."""
    return _BY_HF_CLASS.get(hf_class) if isinstance(hf_class, str) else None


def architecture_named(name: object) -> Architecture | None:
    """The architecture llama.cpp calls `name` (a GGUF's general.architecture); None when quantkit does not know it."""
    return _BY_NAME.get(name) if isinstance(name, str) else None


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
    def arch(self) -> Architecture:
        return _BY_HF_CLASS[self.architecture]


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


@dataclass(frozen=True)
class ConfigShape:
    """The shape fields of a Llama or Qwen2 config.json, with the fallbacks llama.cpp's converter uses (no
    num_key_value_heads: one per head; no head_dim: n_embd / n_head). Read by convert and by estimate-memory."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int

    @classmethod
    def of(cls, config: dict, source: str = "the checkpoint") -> "ConfigShape":
        def size(key: str, fallback: int | None = None) -> int:
            value = config.get(key)
            value = fallback if value is None else value
            if value is None:
                raise ModelConfigError(f"{source}: config.json lacks {key}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                                and not value.is_integer()):
                raise ModelConfigError(f"{source}: config.json has a bad value for {key}: {value!r} is not a whole "
                                       "number")
            if value <= 0:
                raise ModelConfigError(f"{source}: config.json has a non-positive size ({key} {value})")
            return int(value)

        n_embd, n_head = size("hidden_size"), size("num_attention_heads")
        return cls(n_layer=size("num_hidden_layers"), n_embd=n_embd, n_head=n_head,
                   n_head_kv=size("num_key_value_heads", n_head), head_dim=size("head_dim", n_embd // n_head or None),
                   n_ff=size("intermediate_size"), n_vocab=size("vocab_size"))


def llama3_rope(config: dict) -> dict | None:
    """config.json's rope scaling when it is Llama 3.1's (`rope_scaling`, or `rope_parameters` in newer
    transformers), which llama.cpp applies through a `rope_freqs` tensor; None otherwise."""
    rope = config.get("rope_scaling") or config.get("rope_parameters")
    if not isinstance(rope, dict):
        return None
    return rope if str(rope.get("rope_type", rope.get("type", ""))).lower() == "llama3" else None
