"""Eval statistics against hand-computed values and independent computations (exact binomial quantiles for the
bootstrap of 0/1 outcomes, brute-force enumeration for the sign test, the normal approximation at large n)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from quantkit.eval.records import Sample
from quantkit.eval.stats import (bootstrap_means, correct_by_problem, paired_difference, pass_at_1, per_problem,
                                 sign_test, summarize, token_stats)


def test_pass_at_1_by_hand():
    correct = {"a": [True, False], "b": [True, True], "c": [False, False, False, True]}
    assert per_problem(correct) == {"a": 0.5, "b": 1.0, "c": 0.25}
    est = pass_at_1(correct)
    assert est.value == pytest.approx((0.5 + 1 + 0.25) / 3)  # the mean of the per-problem means, not 5/8
    assert est.problems == 3 and est.samples == 8
    assert 0.25 <= est.low <= est.value <= est.high <= 1.0
    # three problems: a resample's mean is one of the 10 multisets of three shares; the extremes are attainable
    assert est.low == pytest.approx(0.25, abs=0.09) and est.high == pytest.approx(1.0, abs=0.09)
    assert pass_at_1(correct) == est  # seeded: the same interval every time
    assert pass_at_1({"a": [True]}) .low == 1.0
    with pytest.raises(ValueError):
        pass_at_1({})
    with pytest.raises(ValueError):
        pass_at_1({"a": []})


def _binomial_quantile(n: int, p: float, q: float) -> int:
    """The smallest x with P(X ≤ x) ≥ q for X ~ Binomial(n, p), summed exactly."""
    total = 0.0
    for x in range(n + 1):
        total += math.comb(n, x) * p ** x * (1 - p) ** (n - x)
        if total >= q - 1e-12:
            return x
    return n


@pytest.mark.parametrize("n,right", [(30, 9), (100, 50), (200, 180)])
def test_bootstrap_matches_the_binomial(n, right):
    """With one 0/1 sample per problem, a bootstrap resample's count of correct problems is exactly
    Binomial(n, right/n): its percentile interval must sit at the binomial quantiles."""
    correct = {f"p{i}": [i < right] for i in range(n)}
    est = pass_at_1(correct, resamples=40_000)
    p = right / n
    assert est.value == pytest.approx(p)
    assert est.low == pytest.approx(_binomial_quantile(n, p, 0.025) / n, abs=1.01 / n)
    assert est.high == pytest.approx(_binomial_quantile(n, p, 0.975) / n, abs=1.01 / n)


def test_bootstrap_means_is_a_plain_resampling():
    values = np.array([0.0, 0.5, 1.0, 0.25])
    means = bootstrap_means(values, resamples=5, seed=3)
    rng = np.random.default_rng(3)
    expected = values[rng.integers(0, 4, size=(5, 4))].mean(axis=1)
    assert np.allclose(means, expected)
    big = bootstrap_means(np.arange(10.0), resamples=200_000, seed=1)  # chunked draws: mean and spread still right
    assert big.mean() == pytest.approx(4.5, abs=0.02)
    assert big.std() == pytest.approx(np.arange(10.0).std() / math.sqrt(10), rel=0.02)


def _sign_test_by_enumeration(wins: int, losses: int) -> float:
    """Two-sided p-value by listing every assignment of signs: the share at least as extreme as observed."""
    n = wins + losses
    if n == 0:
        return 1.0
    observed = abs(wins - losses)
    extreme = sum(1 for signs in itertools.product((1, -1), repeat=n) if abs(sum(signs)) >= observed)
    return extreme / 2 ** n


@pytest.mark.parametrize("wins,losses", [(0, 0), (1, 0), (3, 3), (7, 1), (2, 9), (0, 12), (5, 6), (10, 3)])
def test_sign_test(wins, losses):
    assert sign_test(wins, losses) == pytest.approx(_sign_test_by_enumeration(wins, losses))


def test_sign_test_by_hand():
    assert sign_test(8, 0) == pytest.approx(2 / 256)  # 2 × 0.5^8
    assert sign_test(6, 1) == pytest.approx(2 * (1 + 7) / 128)  # McNemar exact: b = 6, c = 1 → 0.125


def test_paired_difference_by_hand():
    base = {"a": [True], "b": [True], "c": [False], "d": [False], "e": [True]}
    rung = {"a": [True], "b": [False], "c": [False], "d": [True], "e": [False], "extra": [True]}
    diff = paired_difference(base, rung)
    assert diff.problems == 5  # "extra" is not in the base: not compared
    assert diff.delta == pytest.approx((0 - 1 + 0 + 1 - 1) / 5)
    assert (diff.better, diff.worse) == (1, 2)
    assert diff.p_value == pytest.approx(1.0)  # 1 against 2 discordant pairs: 2 × P(X ≤ 1 | n = 3) = 1
    assert diff.low < diff.delta < diff.high
    with pytest.raises(ValueError, match="share no problem"):
        paired_difference({"a": [True]}, {"b": [True]})


def test_paired_difference_with_samples():
    base = {"a": [True, True, False, False], "b": [True, True, True, True]}
    rung = {"a": [True, False, False, False], "b": [True, True, True, False]}
    diff = paired_difference(base, rung)
    assert diff.delta == pytest.approx(((0.25 - 0.5) + (0.75 - 1.0)) / 2)
    assert (diff.better, diff.worse, diff.p_value) == (0, 2, 0.5)
    assert diff.low == pytest.approx(-0.25) and diff.high == pytest.approx(-0.25)  # both problems lost 0.25


def test_paired_interval_against_the_normal_approximation():
    """At 400 problems the paired bootstrap interval is close to mean ± 1.96 sd / √n, and pairing matters: the
    unpaired interval from two independent pass@1 intervals would be far wider."""
    rng = np.random.default_rng(7)
    n = 400
    skill = rng.random(n)
    base = {f"p{i}": [bool(rng.random() < skill[i]) for _ in range(4)] for i in range(n)}
    rung = {p: [v if rng.random() > 0.1 else False for v in vs] for p, vs in base.items()}
    diff = paired_difference(base, rung)
    d = np.array([np.mean(rung[p]) - np.mean(base[p]) for p in base])
    half = 1.96 * d.std() / math.sqrt(n)
    assert diff.delta == pytest.approx(d.mean())
    assert diff.low == pytest.approx(d.mean() - half, abs=0.25 * half)
    assert diff.high == pytest.approx(d.mean() + half, abs=0.25 * half)
    assert diff.high < 0 and diff.p_value < 1e-6  # a 10 % loss of correct samples is found
    b, r = pass_at_1(base), pass_at_1(rung)
    assert (diff.high - diff.low) < 0.5 * ((b.high - b.low) + (r.high - r.low))


def sample(problem: str, index: int, verdict: str, thought: int, finish: str = "stop", seconds: float = 1.0,
           answer_tokens: int = 10) -> Sample:
    return Sample(problem, index, index, "text", "thought", "answer", "1", "1" if verdict == "correct" else None,
                  verdict, 20, thought, answer_tokens, finish, seconds)


def test_summary_by_hand():
    samples = [sample("a", 0, "correct", 100), sample("a", 1, "wrong", 300),
               sample("b", 0, "correct", 200), sample("b", 1, "correct", 500),
               sample("c", 1, "no_answer", 1000, "length", seconds=4.0), sample("c", 0, "timeout", 50)]
    s = summarize(samples)
    assert s.pass_at_1.value == pytest.approx((0.5 + 1 + 0) / 3)
    assert (s.thought_tokens_correct.count, s.thought_tokens_correct.mean, s.thought_tokens_correct.median) == \
        (3, pytest.approx(800 / 3), 200.0)
    assert (s.thought_tokens_wrong.mean, s.thought_tokens_wrong.median) == (pytest.approx(1350 / 3), 300.0)
    assert s.cut_off == pytest.approx(1 / 6)
    assert s.generated_tokens == 2150 + 60
    assert s.tokens_per_second == pytest.approx(2210 / 9.0)
    assert summarize(samples, wall_seconds=2.0).tokens_per_second == pytest.approx(1105)
    assert s.verdicts == {"correct": 3, "wrong": 1, "no_answer": 1, "timeout": 1}
    assert correct_by_problem(samples)["c"] == [False, False]
    assert token_stats([]).mean is None and token_stats([4, 1, 3, 2]).median == 2.5
