"""A llama.cpp sampler chain, sampled from one row of the last decode's logits.

The stages, in order (each only when asked): logit bias, repetition penalties, a grammar, then either greedy
(temperature 0) or top-k, temperature, top-p, min-p and a seeded draw. `sample_with_probs` runs the same chain
stage by stage and also reports the distribution the final draw chose from (see TokenProbs)."""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError
from ..models import R1_TEMPERATURE, R1_TOP_K, R1_TOP_P
from ..resources import Closeable
from ._lib import lib

PENALTY_LAST_N = 64  # tokens the penalties look back over (llama.cpp's --repeat-last-n default)


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar for llama.cpp's grammar sampler. `trigger`: a lazy grammar, inactive until this text is
    generated (then the text from the trigger on must follow the grammar), e.g. "</think>" to constrain only the
    answer after a thought."""

    gbnf: str
    trigger: str | None = None


@dataclass(frozen=True)
class Sampling:
    """DeepSeek's R1 settings (temperature 0.6, top-p 0.95) by default, after llama.cpp's and Ollama's top-k of 40:
    at temperature 0.6 the 0.95 nucleus is nearly always smaller (over 40 tokens in 3 of 1,221 steps of SmolLM2,
    at most 54), and sorting 40 candidates instead of the whole vocabulary saves ~0.4 ms a token. `top_k=0`
    keeps every token; temperature 0 is greedy. Penalties are llama.cpp's, over the last PENALTY_LAST_N generated
    tokens: `repeat_penalty` divides their positive logits (and multiplies the negative ones), `frequency_penalty`
    subtracts per occurrence, `presence_penalty` once; `logit_bias` adds to a token's logit (-inf bans it)."""

    temperature: float = R1_TEMPERATURE
    top_p: float = R1_TOP_P
    top_k: int = R1_TOP_K
    seed: int | None = None
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: Grammar | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise InvalidArgumentError(f"--temperature must be ≥ 0, not {self.temperature}", param="temperature")
        if not 0 < self.top_p <= 1:
            raise InvalidArgumentError(f"--top-p must be in (0, 1], not {self.top_p}", param="top_p")
        if self.top_k < 0:
            raise InvalidArgumentError(f"--top-k must be ≥ 0, not {self.top_k}", param="top_k")
        if not 0 <= self.min_p <= 1:
            raise InvalidArgumentError(f"min_p must be in [0, 1], not {self.min_p}", param="min_p")
        if self.repeat_penalty <= 0:
            raise InvalidArgumentError(f"repeat_penalty must be > 0, not {self.repeat_penalty}",
                                       param="repeat_penalty")

    @property
    def penalized(self) -> bool:
        return self.repeat_penalty != 1 or self.frequency_penalty != 0 or self.presence_penalty != 0


@dataclass(frozen=True)
class TokenProbs:
    """A sampled token with its log-probability and the `top` most likely tokens (id, log-probability), from the
    distribution the final stage drew from: the logits after every earlier stage (bias, penalties, grammar,
    top-k, temperature, top-p, min-p), normalized. Greedy (temperature 0) has no temperature: its distribution is
    the softmax of the logits after bias, penalties and grammar. Tokens a stage cut have probability 0 and are
    never listed, so the listed probabilities sum to at most 1."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class Sampler(Closeable):
    """Owns one llama.cpp sampler chain. Not thread-safe: one sequence, one thread. `model` is needed for the
    stages that know the vocabulary (bias, penalties, grammar)."""

    def __init__(self, sampling: Sampling = Sampling(), model=None):
        llama_cpp = lib()
        self.sampling = sampling
        self._sample = llama_cpp.llama_sampler_sample
        self.ptr = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        try:
            for stage in _stages(llama_cpp, sampling, model):
                if not stage:
                    raise InvalidArgumentError("llama.cpp refused the grammar (see the log)", param="grammar")
                llama_cpp.llama_sampler_chain_add(self.ptr, stage)
        except BaseException:
            self.close()
            raise
        self._n_vocab = model.n_vocab if model is not None else None
        self._ids: np.ndarray | None = None

    def sample(self, context, index: int) -> int:
        """Draw (and accept) a token from the logits of batch row `index` of `context`'s last decode."""
        return int(self._sample(self.ptr, context.ptr, index))

    def sample_with_probs(self, context, index: int, top: int) -> TokenProbs:
        """`sample`, stage by stage (the same token for the same state), with the drawn-from distribution."""
        llama_cpp = lib()
        n_vocab = context.model.n_vocab
        if self._ids is None or len(self._ids) != n_vocab:
            self._ids = np.arange(n_vocab, dtype=np.int32)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context.ptr, index), shape=(n_vocab,))
        data = np.empty(n_vocab, dtype=_TOKEN_DATA)
        data["id"], data["logit"], data["p"] = self._ids, logits, 0.0
        cur = llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=n_vocab, selected=-1,
            sorted=False)
        n = llama_cpp.llama_sampler_chain_n(self.ptr)
        for i in range(n - 1):
            llama_cpp.llama_sampler_apply(llama_cpp.llama_sampler_chain_get(self.ptr, i), ctypes.byref(cur))
        view = _view(llama_cpp, cur)
        ids, values = view["id"].copy(), view["logit"].astype(np.float64)
        llama_cpp.llama_sampler_apply(llama_cpp.llama_sampler_chain_get(self.ptr, n - 1), ctypes.byref(cur))
        token = int(_view(llama_cpp, cur)["id"][cur.selected])
        llama_cpp.llama_sampler_accept(self.ptr, token)
        return _probs(token, ids, values, top)

    def accept(self, token: int) -> None:
        """Tell the chain's stateful stages (penalties, grammar) of a token it did not sample (a forced one)."""
        lib().llama_sampler_accept(self.ptr, token)

    def close(self) -> None:
        if self.ptr is not None:
            lib().llama_sampler_free(self.ptr)
            self.ptr = None


def _view(llama_cpp, cur) -> np.ndarray:
    raw = ctypes.cast(cur.data, ctypes.POINTER(ctypes.c_uint8 * (cur.size * _TOKEN_DATA.itemsize))).contents
    return np.frombuffer(raw, dtype=_TOKEN_DATA, count=cur.size)


def _probs(token: int, ids: np.ndarray, logits: np.ndarray, top: int) -> TokenProbs:
    keep = np.isfinite(logits)
    ids, logits = ids[keep], logits[keep]
    peak = logits.max()
    logprobs = logits - (peak + math.log(np.exp(logits - peak).sum()))
    where = np.flatnonzero(ids == token)
    chosen = float(logprobs[where[0]]) if len(where) else -math.inf
    order = []
    if top > 0:  # the `top` largest, without sorting the whole vocabulary
        head = np.argpartition(-logprobs, top - 1)[:top] if top < len(logprobs) else np.arange(len(logprobs))
        order = head[np.argsort(-logprobs[head], kind="stable")]
    return TokenProbs(token, chosen, tuple((int(ids[i]), float(logprobs[i])) for i in order))


def _stages(llama_cpp, s: Sampling, model):
    """The chain's samplers, in order."""
    if (s.logit_bias or s.penalized or s.grammar is not None) and model is None:
        raise InvalidArgumentError("logit bias, penalties and grammars need the model's vocabulary")
    if s.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(s.logit_bias))(
            *(llama_cpp.llama_logit_bias(token, bias) for token, bias in s.logit_bias))
        yield llama_cpp.llama_sampler_init_logit_bias(model.n_vocab, len(s.logit_bias), biases)
    if s.penalized:
        yield llama_cpp.llama_sampler_init_penalties(model.n_vocab, PENALTY_LAST_N, s.repeat_penalty,
                                                     s.frequency_penalty, s.presence_penalty)
    if s.grammar is not None:
        yield _grammar(llama_cpp, s.grammar, model)
    if s.temperature == 0:
        yield llama_cpp.llama_sampler_init_greedy()
        return
    if s.top_k:
        yield llama_cpp.llama_sampler_init_top_k(s.top_k)
    # temperature before top-p, as in Hugging Face and vLLM, whose numbers DeepSeek's advice comes from
    yield llama_cpp.llama_sampler_init_temp(s.temperature)
    if s.top_p < 1:
        yield llama_cpp.llama_sampler_init_top_p(s.top_p, 1)
    if s.min_p > 0:
        yield llama_cpp.llama_sampler_init_min_p(s.min_p, 1)
    yield llama_cpp.llama_sampler_init_dist(llama_cpp.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF)


def _grammar(llama_cpp, grammar: Grammar, model):
    text = grammar.gbnf.encode()
    if grammar.trigger is None:
        return llama_cpp.llama_sampler_init_grammar(model.vocab, text, b"root")
    patterns = (ctypes.c_char_p * 1)(_regex_literal(grammar.trigger).encode())
    return llama_cpp.llama_sampler_init_grammar_lazy_patterns(model.vocab, text, b"root", patterns, 1, None, 0)


def _regex_literal(text: str) -> str:
    """`text` as a std::regex (ECMAScript) matching it literally."""
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}/" else c for c in text)
