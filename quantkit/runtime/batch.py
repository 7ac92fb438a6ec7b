"""A llama_batch: the tokens of one decode, each with its position, its sequence and whether its logits are kept."""
from __future__ import annotations

import numpy as np

from ..errors import QuantkitError
from ..resources import Closeable
from ._lib import lib


class Batch(Closeable):
    """Filled token by token with `add()` (the engine), or from whole arrays with `set()` (perplexity, bench)."""

    def __init__(self, capacity: int):
        self._llama_cpp = lib()
        self.capacity = capacity
        self.raw = self._llama_cpp.llama_batch_init(capacity, 0, 1)
        self.n_tokens = 0

    def clear(self) -> None:
        self.n_tokens = 0
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one token; returns its index in the batch (the row to sample from when `logits`)."""
        i = self.n_tokens
        if i >= self.capacity:
            raise QuantkitError(f"batch of {i + 1} tokens exceeds its capacity of {self.capacity}")
        raw = self.raw
        raw.token[i] = token
        raw.pos[i] = pos
        raw.n_seq_id[i] = 1
        raw.seq_id[i][0] = seq
        raw.logits[i] = logits
        self.n_tokens = raw.n_tokens = i + 1
        return i

    def set(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, outputs: np.ndarray) -> None:
        n = len(tokens)
        if n > self.capacity:
            raise QuantkitError(f"batch of {n} tokens exceeds its capacity of {self.capacity}")
        raw = self.raw
        np.ctypeslib.as_array(raw.token, shape=(n,))[:] = tokens
        np.ctypeslib.as_array(raw.pos, shape=(n,))[:] = pos
        np.ctypeslib.as_array(raw.n_seq_id, shape=(n,))[:] = 1
        np.ctypeslib.as_array(raw.logits, shape=(n,))[:] = outputs.astype(np.int8)
        for i, s in enumerate(seq.tolist()):
            raw.seq_id[i][0] = s
        raw.n_tokens = n
        self.n_tokens = n

    def close(self) -> None:
        if self.raw is not None:
            self._llama_cpp.llama_batch_free(self.raw)
            self.raw = None
