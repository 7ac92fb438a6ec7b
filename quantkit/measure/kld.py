"""KL-divergence of a quantized model from its base, per scored position, with llama-perplexity's statistics.

What is kept of the base run, and why: llama-perplexity saves every scored position's whole distribution as
uint16-quantized log-probabilities (2 bytes × n_vocab: ~75 GB for wikitext-2 with a 152k vocabulary). quantkit
keeps, per position, only what the statistics need:
- the base's NLL of the true next token (float64): PPL(base), Δp and ln(PPL(Q)/PPL(base)) are exact;
- the base's top-K token ids and log-probabilities (int32 + float32, K = `TOP_K`): the "same top token" test
  is exact, and the KL sum over those K tokens is exact;
- the log of the base's probability mass outside the top K (float64), so that the rest of the vocabulary enters
  the KL sum as one bucket: r_p · ln(r_p / r_q). By the log-sum inequality that bucket is a lower bound of the
  true tail sum, so quantkit's KLD is ≤ the full-vocabulary KLD, and equal to it as r_p → 0.
That is 8·K + 16 bytes a position (8 KB for K = 1024: ~1.2 GB for all of wikitext-2 at ctx 512, in a file
that is read back through a memory map, so RAM stays flat). llama-perplexity's own KLD is not
exact either: it quantizes log-probs to 16 bits over a range of 16 nats and drops tokens with p_base < e⁻¹⁶.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import cache_dir

TOP_K = 1024  # measured on SmolLM2 Q4_1 → Q4_0: mean KLD −13.5 % at 64, −3.7 % at 512, −2.0 % at 1024, −1.0 % at 2048, −0.4 % at 4096
PERCENTILES = (("max", 1.0), ("99.9%", 0.999), ("99%", 0.99), ("95%", 0.95), ("90%", 0.90), ("median", 0.5),
               ("10%", 0.10), ("5%", 0.05), ("1%", 0.01), ("0.1%", 0.001), ("min", 0.0))


_COLUMNS = (("nll", np.float64, False), ("top_ids", np.int32, True), ("top_logp", np.float32, True),
            ("tail_logp", np.float64, False))  # name, dtype, one value per kept token (else one per position)


class BaseLogProbs:
    """The base run's scored positions, in evaluation order, written to files in quantkit's cache and read back
    through memory maps, so that memory stays flat however long the text is."""

    def __init__(self, n_vocab: int, k: int, folder: Path | None = None):
        self.n_vocab = n_vocab
        self.k = min(k, n_vocab)
        self.n_positions = 0
        self._dir = tempfile.TemporaryDirectory(prefix="kl-base-", dir=folder or cache_dir("tmp"))
        self._files = {name: open(Path(self._dir.name) / name, "wb") for name, _, _ in _COLUMNS}
        self._maps: dict[str, np.ndarray] | None = None

    def add(self, logits: np.ndarray, log_z: np.ndarray, nll: np.ndarray) -> None:
        """Record a block of rows: raw logits (float32), their log-partition and the true tokens' NLL."""
        if self._maps is not None:
            raise RuntimeError("the base data is complete: it is being read")
        ids = np.argpartition(logits, -self.k, axis=1)[:, -self.k:]
        vals = np.take_along_axis(logits, ids, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        ids = np.take_along_axis(ids, order, axis=1)
        logp = np.take_along_axis(vals, order, axis=1).astype(np.float64) - log_z[:, None]
        block = {"nll": nll, "top_ids": ids, "top_logp": logp, "tail_logp": _log_tail(logits, log_z, ids)}
        for name, dtype, _ in _COLUMNS:
            self._files[name].write(np.ascontiguousarray(block[name], dtype=dtype).tobytes())
        self.n_positions += len(nll)

    def rows(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """nll, top ids, top log-probs and tail log-mass of positions start … start+n−1."""
        maps = self._read()
        sl = slice(start, start + n)
        return maps["nll"][sl], maps["top_ids"][sl], maps["top_logp"][sl], maps["tail_logp"][sl]

    @property
    def nbytes(self) -> int:
        per_position = sum(np.dtype(dtype).itemsize * (self.k if wide else 1) for _, dtype, wide in _COLUMNS)
        return per_position * self.n_positions

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._maps = None
        self._dir.cleanup()

    def _read(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            maps = {}
            for name, dtype, wide in _COLUMNS:
                self._files[name].close()
                shape = (self.n_positions, self.k) if wide else (self.n_positions,)
                path = Path(self._dir.name) / name
                maps[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape) if self.n_positions else \
                    np.zeros(shape, dtype=dtype)
            self._maps = maps
        return self._maps


def _log_tail(logits: np.ndarray, log_z: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """ln of the probability mass outside `ids`, per row (−inf when there is none)."""
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    total = e.sum(axis=1, dtype=np.float64)
    top = np.take_along_axis(e, ids, axis=1).sum(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(total - top, 0.0)) - np.log(total)


def compare(logits: np.ndarray, log_z: np.ndarray, nll: np.ndarray,
            base: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: KL(base ‖ this) (top-K plus one tail bucket), Δp of the true token, same top token."""
    nll_base, ids, logp_base, tail_base = base
    logq = np.take_along_axis(logits, ids.astype(np.intp), axis=1).astype(np.float64) - log_z[:, None]
    p = np.exp(logp_base.astype(np.float64))
    kld = (p * (logp_base - logq)).sum(axis=1)
    tail_q = _log_tail(logits, log_z, ids.astype(np.intp))
    r_p = np.exp(tail_base)
    with np.errstate(invalid="ignore"):
        bucket = np.where(r_p > 0, r_p * (tail_base - np.maximum(tail_q, -745.0)), 0.0)
    kld = kld + bucket
    p_diff = np.exp(-nll) - np.exp(-nll_base)
    same_top = logits.argmax(axis=1) == ids[:, 0]
    return kld, p_diff, same_top


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """llama-perplexity's estimate: the mean and its standard error (0 for fewer than 11 values)."""
    n = len(values)
    if n < 1:
        return 0.0, 0.0
    mean = float(np.sum(values) / n)
    var = float(np.sum(np.square(values)) / n - mean * mean)
    return mean, (float(np.sqrt(var / (n - 1))) if var > 0 and n > 10 else 0.0)


@dataclass
class KLStats:
    n_positions: int
    ppl_base: float
    ppl_base_err: float
    ln_ppl_ratio: float
    ln_ppl_ratio_err: float
    mean_kld: float
    mean_kld_err: float
    kld_percentiles: dict[str, float]
    mean_dp: float
    mean_dp_err: float
    rms_dp: float
    rms_dp_err: float
    same_top: float
    same_top_err: float
    top_k: int


def kl_stats(kld: np.ndarray, p_diff: np.ndarray, same_top: np.ndarray, nll: np.ndarray, nll_base: np.ndarray,
             top_k: int) -> KLStats:
    """The figures of llama-perplexity's KL-divergence report, from per-position values."""
    n = len(kld)
    log_ppl, log_ppl_err = mean_and_uncertainty(nll)
    log_base, log_base_err = mean_and_uncertainty(nll_base)
    cov = float(np.sum(nll * nll_base) / n - (np.sum(nll) / n) * (np.sum(nll_base) / n)) / (n - 1) if n >= 10 else 0.0
    ratio_err = np.sqrt(max(log_ppl_err**2 + log_base_err**2 - 2 * cov, 0.0))
    mean_kld, mean_kld_err = mean_and_uncertainty(kld)
    mean_dp, mean_dp_err = mean_and_uncertainty(p_diff)
    mse, mse_err = mean_and_uncertainty(np.square(p_diff))
    rms = float(np.sqrt(mse))
    top = float(np.mean(same_top))
    return KLStats(
        n_positions=n,
        ppl_base=float(np.exp(log_base)), ppl_base_err=float(np.exp(log_base) * log_base_err),
        ln_ppl_ratio=log_ppl - log_base, ln_ppl_ratio_err=float(ratio_err),
        mean_kld=mean_kld, mean_kld_err=mean_kld_err,
        kld_percentiles={name: float(np.quantile(kld, q)) for name, q in PERCENTILES},
        mean_dp=mean_dp, mean_dp_err=mean_dp_err,
        rms_dp=rms, rms_dp_err=0.5 / rms * mse_err if rms > 0 else 0.0,
        same_top=top, same_top_err=float(np.sqrt(top * (1 - top) / (n - 1))) if n > 1 else 0.0,
        top_k=top_k,
    )
