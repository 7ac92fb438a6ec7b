"""At R1's temperature, speculative decoding samples from the model's own distribution: on the fork model (one
position with two successors, p = 0.552 / 0.448 after temperature, inside the drafted span), the share of each
continuation over many seeds is the same with a draft model, with the n-gram lookup and without either — a
two-proportion test at alpha 1e-4 — and each equals the known 0.552 (a binomial test at the same alpha). The same
test rejects a deliberately wrong acceptance rule (always keep the proposal), so it can fail.

The arms use disjoint seeds: the counts are independent samples, not the same draws replayed (test_speculative.py
checks that a seed gives the same tokens with and without speculation)."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from quantkit.engine import Engine, GenerationRequest, Sampling
from quantkit.engine.speculative import Speculation
from tests._fixtures import scripted as S

N = 2000  # seeds per arm: the whole file takes about 30 s on a loaded 2-core machine
ALPHA = 1e-4
Z = 3.8906  # the two-sided normal quantile of ALPHA (|z| above it: reject)
PROMPT = [S.FORK_IDS[w] for w in (" green", " blue", " cat", " sun", " red")]  # the lookup finds " green" here


def _z_two_proportions(k1: int, n1: int, k2: int, n2: int) -> float:
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return (k1 / n1 - k2 / n2) / se if se else (0.0 if k1 * n2 == k2 * n1 else math.inf)


def _z_binomial(k: int, n: int, p: float) -> float:
    return (k - n * p) / math.sqrt(n * p * (1 - p))


def same_distribution(plain: Counter, other: Counter) -> bool:
    """Whether the counts of the likely continuation could come from one distribution, at ALPHA."""
    likely = S.FORK_TEXTS[0]
    return abs(_z_two_proportions(plain[likely], sum(plain.values()), other[likely], sum(other.values()))) <= Z


def matches_known(counts: Counter) -> bool:
    return abs(_z_binomial(counts[S.FORK_TEXTS[0]], sum(counts.values()), S.FORK_P)) <= Z


class AlwaysAccepting(Engine):
    """A wrong acceptance rule: every proposed token is kept whatever the model samples at its row (the rows
    after the proposals are sampled as usual)."""

    def _verify(self, slot, job, row, draft):
        real = job.sampler

        class Keep:
            def sample(self, ctx, r):
                return draft[r - row] if r - row < len(draft) else real.sample(ctx, r)

            def __getattr__(self, name):
                return getattr(real, name)

        job.sampler = Keep()
        try:
            super()._verify(slot, job, row, draft)
        finally:
            job.sampler = real


def _counts(path, spec, first_seed: int, engine=Engine) -> tuple[Counter, int]:
    """(continuation → count over N seeds from `first_seed`, tokens drafted)."""
    with engine.open(path, n_ctx=2048, n_parallel=64, n_batch=1024, n_gpu_layers=0, threads=2,
                     speculation=spec) as e:
        requests = [GenerationRequest(PROMPT, Sampling(temperature=S.FORK_TEMPERATURE, seed=first_seed + i),
                                      max_tokens=8, split_reasoning=False) for i in range(N)]
        results = [s.wait() for s in e.submit_many(requests)]
        return Counter(r.text for r in results), e.stats().drafted_tokens


@pytest.fixture(scope="module")
def fork():
    return S.fork_gguf()


@pytest.fixture(scope="module")
def plain(fork):
    counts, drafted = _counts(fork, None, 0)
    assert drafted == 0 and set(counts) == set(S.FORK_TEXTS)
    return counts


SPECS = {"draft": lambda path: Speculation("draft", draft=path, p_min=0.0),  # proposes through the fork
         "ngram": lambda path: Speculation("ngram", ngram=1)}
FIRST_SEED = {"draft": 10 * N, "ngram": 20 * N, "wrong": 30 * N}  # every arm its own seeds


def test_without_speculation_the_share_is_the_known_probability(plain):
    print(f"\nplain: {dict(plain)}")
    assert matches_known(plain)


@pytest.mark.parametrize("mode", SPECS)
def test_speculation_samples_the_same_distribution(fork, plain, mode):
    counts, drafted = _counts(fork, SPECS[mode](fork), FIRST_SEED[mode])
    print(f"\n{mode}: {dict(counts)}, {drafted} tokens drafted; plain {dict(plain)}")
    assert drafted >= 2 * N  # the fork is inside the drafted span: " blue" and the continuation are proposed
    assert set(counts) == set(S.FORK_TEXTS)
    assert same_distribution(plain, counts) and matches_known(counts)


def test_the_test_rejects_a_wrong_acceptance_rule(fork, plain):
    counts, _ = _counts(fork, SPECS["draft"](fork), FIRST_SEED["wrong"], engine=AlwaysAccepting)
    print(f"\nalways accepting: {dict(counts)}")
    assert not same_distribution(plain, counts) and not matches_known(counts)
