"""The numbers of an evaluation, with intervals a reader can trust.

pass@1 with k samples per problem is the mean over problems of each problem's share of correct samples. Its 95 %
interval is a percentile bootstrap over problems (10,000 resamples, seed 0): the problems are the sample that
stands for the benchmark, so they are what is resampled, and each problem's share already carries the noise of
its k samples. The bootstrap keeps the interval inside [0, 1] and needs no normal approximation, which is poor
at 30 problems (AIME) or near 0 % and 100 % (a tiny model on arith); it is deterministic for a given seed.

A rung against its base is compared on the same problems: the mean of the per-problem differences, with a paired
bootstrap over problems (the same resampled problems for both, so that the large problem-to-problem variance
cancels) for its 95 % interval, and an exact two-sided sign test on the problems whose share differs — with k = 1
that is McNemar's exact test on the discordant pairs. The interval says how large a drop may be, the p-value
whether it is there at all.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float  # the 95 % interval
    high: float
    problems: int
    samples: int  # in all


@dataclass(frozen=True)
class Difference:
    delta: float  # the rung's pass@1 minus the base's, on the problems both answered
    low: float  # the 95 % interval of delta (paired bootstrap over problems)
    high: float
    p_value: float  # exact two-sided sign test over problems (McNemar's exact test when k = 1)
    better: int  # problems where the rung's share of correct samples is higher than the base's
    worse: int
    problems: int


@dataclass(frozen=True)
class TokenStats:
    count: int
    mean: float | None  # None without samples
    median: float | None


def per_problem(correct: Mapping[str, Sequence[bool]]) -> dict[str, float]:
    """Each problem's share of correct samples."""
    out = {}
    for problem, verdicts in correct.items():
        if len(verdicts) == 0:
            raise ValueError(f"problem {problem!r} has no samples")
        out[problem] = sum(bool(v) for v in verdicts) / len(verdicts)
    return out


def bootstrap_means(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The means of `resamples` resamples of `values` (with replacement, same size), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(len(values), 1))  # bounded memory for large tasks
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        means[start:start + n] = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return means


def _interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def pass_at_1(correct: Mapping[str, Sequence[bool]], confidence: float = CONFIDENCE,
              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """pass@1 over k samples per problem (the mean of the per-problem means) with its bootstrap interval."""
    shares = per_problem(correct)
    if not shares:
        raise ValueError("no problems to score")
    values = np.array(list(shares.values()), dtype=np.float64)
    low, high = _interval(bootstrap_means(values, resamples, seed), confidence)
    return Estimate(float(values.mean()), low, high, len(values), sum(len(v) for v in correct.values()))


def paired_difference(base: Mapping[str, Sequence[bool]], other: Mapping[str, Sequence[bool]],
                      confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> Difference:
    """`other`'s pass@1 minus `base`'s over the problems both have, with a paired bootstrap interval and an
    exact sign test."""
    common = [p for p in base if p in other]
    if not common:
        raise ValueError("the two runs share no problem")
    b, o = per_problem({p: base[p] for p in common}), per_problem({p: other[p] for p in common})
    d = np.array([o[p] - b[p] for p in common], dtype=np.float64)
    low, high = _interval(bootstrap_means(d, resamples, seed), confidence)
    better, worse = int((d > 0).sum()), int((d < 0).sum())
    return Difference(float(d.mean()), low, high, sign_test(better, worse), better, worse, len(common))


def sign_test(wins: int, losses: int) -> float:
    """The exact two-sided p-value of `wins` against `losses` when each is equally likely (ties left out):
    2 × P(X ≤ min) for X ~ Binomial(wins + losses, 1/2), at most 1."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def token_stats(counts: Iterable[int]) -> TokenStats:
    counts = list(counts)
    if not counts:
        return TokenStats(0, None, None)
    return TokenStats(len(counts), statistics.fmean(counts), float(statistics.median(counts)))


@dataclass(frozen=True)
class Summary:
    pass_at_1: Estimate
    thought_tokens_correct: TokenStats
    thought_tokens_wrong: TokenStats  # every sample not correct: wrong, no answer, timed out
    cut_off: float  # the share of samples that stopped at the token budget (finish reason "length")
    looped: float  # the share of samples whose thought the loop guard found repeating itself
    budget_reached: float  # the share of samples whose thought the reasoning budget ended
    generated_tokens: int
    tokens_per_second: float | None  # generated tokens over the wall time given, else over the samples' own time
    verdicts: dict[str, int]
    acceptance: float | None = None  # speculative decoding: accepted / drafted tokens (None: nothing drafted)


def summarize(samples: Sequence, wall_seconds: float | None = None, confidence: float = CONFIDENCE,
              seed: int = BOOTSTRAP_SEED) -> Summary:
    """The summary of one model's samples (records.Sample, or anything with the same fields). With several
    sequences generated at once, pass the run's `wall_seconds`: the samples' own seconds overlap."""
    if not samples:
        raise ValueError("no samples to summarize")
    generated = sum(s.reasoning_tokens + s.answer_tokens for s in samples)
    seconds = wall_seconds if wall_seconds is not None else sum(s.seconds for s in samples)
    verdicts: dict[str, int] = {}
    for s in samples:
        verdicts[s.verdict] = verdicts.get(s.verdict, 0) + 1
    return Summary(
        pass_at_1=pass_at_1(correct_by_problem(samples), confidence, seed=seed),
        thought_tokens_correct=token_stats(s.reasoning_tokens for s in samples if s.verdict == "correct"),
        thought_tokens_wrong=token_stats(s.reasoning_tokens for s in samples if s.verdict != "correct"),
        cut_off=sum(s.finish_reason == "length" for s in samples) / len(samples),
        looped=sum(bool(getattr(s, "looped", False)) for s in samples) / len(samples),
        budget_reached=sum(bool(getattr(s, "budget_reached", False)) for s in samples) / len(samples),
        generated_tokens=generated,
        tokens_per_second=generated / seconds if seconds > 0 else None,
        verdicts=verdicts,
        acceptance=_acceptance(samples),
    )


def _acceptance(samples: Sequence) -> float | None:
    drafted = sum(getattr(s, "drafted_tokens", 0) for s in samples)
    return sum(getattr(s, "accepted_tokens", 0) for s in samples) / drafted if drafted else None


def correct_by_problem(samples: Iterable) -> dict[str, list[bool]]:
    """Each problem's verdicts (True = correct), in sample order: the input of pass_at_1 and paired_difference."""
    out: dict[str, list[tuple[int, bool]]] = {}
    for s in samples:
        out.setdefault(s.problem_id, []).append((s.sample, s.verdict == "correct"))
    return {p: [ok for _, ok in sorted(v)] for p, v in out.items()}
