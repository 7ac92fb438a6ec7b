"""A llama.cpp sampler chain: top-k, temperature, top-p and a seeded draw (or greedy), sampled from one row of
the last decode's logits."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgumentError
from ..models import R1_TEMPERATURE, R1_TOP_K, R1_TOP_P
from ..resources import Closeable
from ._lib import lib


@dataclass(frozen=True)
class Sampling:
    """DeepSeek's R1 settings (temperature 0.6, top-p 0.95) by default, after llama.cpp's and Ollama's top-k of 40:
    at temperature 0.6 the 0.95 nucleus is nearly always smaller (over 40 tokens in 3 of 1,221 steps of SmolLM2,
    at most 54), and sorting 40 candidates instead of the whole vocabulary saves ~0.4 ms a token. `top_k=0`
    keeps every token; temperature 0 is greedy."""

    temperature: float = R1_TEMPERATURE
    top_p: float = R1_TOP_P
    top_k: int = R1_TOP_K
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise InvalidArgumentError(f"--temperature must be ≥ 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidArgumentError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            raise InvalidArgumentError(f"--top-k must be ≥ 0, not {self.top_k}")


class Sampler(Closeable):
    """Owns one llama.cpp sampler chain. Not thread-safe: one sequence, one thread."""

    def __init__(self, sampling: Sampling = Sampling()):
        llama_cpp = lib()
        self.sampling = sampling
        self._sample = llama_cpp.llama_sampler_sample
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        s = sampling
        if s.temperature == 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if s.top_k:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
            # temperature before top-p, as in Hugging Face and vLLM, whose numbers DeepSeek's advice comes from
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
            if s.top_p < 1:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
            seed = llama_cpp.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        self.ptr = chain

    def sample(self, context, index: int) -> int:
        """Draw (and accept) a token from the logits of batch row `index` of `context`'s last decode."""
        return int(self._sample(self.ptr, context.ptr, index))

    def close(self) -> None:
        if self.ptr is not None:
            lib().llama_sampler_free(self.ptr)
            self.ptr = None
