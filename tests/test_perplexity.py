"""quantkit's perplexity and KL-divergence against an independent slow path: one chunk per decode, the logits of
every position, log-softmax in float64 numpy, the ± and the KL statistics written out again here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantkit import runtime
from quantkit.measure import kld
from quantkit.measure.texts import read_text
from quantkit.measure.perplexity import Settings, perplexity
from tests._fixtures.texts import english_text
from tests._fixtures.tiny_llama import tiny_llama

pytestmark = pytest.mark.slow  # builds or reads a model, or runs llama.cpp



@pytest.fixture(scope="module")
def text() -> bytes:
    return read_text(english_text())


def reference_logprobs(path: Path, text: bytes, n_ctx: int, n_chunks: int, n_ubatch: int = 512
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Full log-probabilities (float64) of every scored position and the tokens they predict, the slow way: one
    chunk per decode. `n_ubatch` is llama.cpp's compute split; it changes float rounding, not the method."""
    import llama_cpp

    with runtime.load_model(path, 0) as model, \
            runtime.create_context(model, n_ctx, n_ctx, n_ubatch=n_ubatch, threads=2) as ctx:
        tokens = model.tokenize(text, add_special=True)
        batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        logps, targets = [], []
        try:
            for c in range(n_chunks):
                chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
                if model.add_bos:
                    chunk[0] = model.bos
                ctx.clear()
                for j in range(n_ctx):
                    batch.token[j] = int(chunk[j])
                    batch.pos[j] = j
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = 0
                    batch.logits[j] = 1
                batch.n_tokens = n_ctx
                assert llama_cpp.llama_decode(ctx.ptr, batch) == 0
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx.ptr), shape=(n_ctx, model.n_vocab))
                logits = logits.astype(np.float64)
                z = logits - logits.max(axis=1, keepdims=True)
                logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
                first = n_ctx // 2
                logps.append(logp[first:n_ctx - 1])
                targets.append(tokens[c * n_ctx + first + 1:(c + 1) * n_ctx])
        finally:
            llama_cpp.llama_batch_free(batch)
    return np.concatenate(logps), np.concatenate(targets)


def reference_ppl(logp: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    nll = -logp[np.arange(len(targets)), targets]
    ppl = np.exp(nll.mean())
    return ppl, ppl * np.sqrt(nll.var() / (len(nll) - 1))


def assert_rel(a: float, b: float, tol: float = 1e-6) -> None:
    assert abs(a - b) <= tol * abs(b), (a, b, abs(a - b) / abs(b))


CASES = [  # (n_ctx, n_batch, chunks): several chunks per decode, one per decode, a chunk in several decodes
    (128, 512, 6),
    (64, 64, 3),
    (64, 16, 2),
]


@pytest.mark.parametrize("n_ctx,n_batch,chunks", CASES)
def test_tiny_model_matches_slow_path(text, n_ctx, n_batch, chunks):
    path = tiny_llama("base")
    [r] = perplexity([path], text, Settings(n_ctx=n_ctx, n_batch=n_batch, chunks=chunks, threads=2, n_gpu_layers=0))
    # a chunk decoded in pieces of n_batch < n_ctx is computed in ubatches of n_batch: same split for the reference
    logp, targets = reference_logprobs(path, text, n_ctx, chunks, n_ubatch=min(n_batch, 512))
    assert r.n_scored == len(targets) == chunks * (n_ctx - 1 - n_ctx // 2)
    ppl, err = reference_ppl(logp, targets)
    assert_rel(r.ppl, ppl)
    assert_rel(r.ppl_err, err)


def test_smollm2_matches_slow_path(smollm2_gguf, text):
    n_ctx, chunks = 128, 4
    [r] = perplexity([smollm2_gguf], text, Settings(n_ctx=n_ctx, n_batch=512, chunks=chunks, threads=2,
                                                    n_gpu_layers=0))
    logp, targets = reference_logprobs(smollm2_gguf, text, n_ctx, chunks)
    ppl, err = reference_ppl(logp, targets)
    assert_rel(r.ppl, ppl)
    assert_rel(r.ppl_err, err)
    assert 5 < r.ppl < 100  # a real model on real English: not a random-weight model's ~vocabulary size


def reference_kl(base: np.ndarray, quant: np.ndarray, targets: np.ndarray, k: int) -> dict:
    """The KL figures from full distributions: the top-k-plus-tail-bucket KLD quantkit defines, and the full one."""
    rows = np.arange(len(targets))
    p = np.exp(base)
    full = (p * (base - quant)).sum(axis=1)
    top = np.argsort(-base, axis=1, kind="stable")[:, :k]
    in_top = np.zeros_like(base, dtype=bool)
    in_top[rows[:, None], top] = True
    p_top, q = np.where(in_top, p, 0.0), np.exp(quant)
    tail_p, tail_q = 1.0 - p_top.sum(axis=1), (q * ~in_top).sum(axis=1)
    bucketed = (p_top * np.where(in_top, base - quant, 0.0)).sum(axis=1) + tail_p * np.log(tail_p / tail_q)
    dp = np.exp(quant[rows, targets]) - np.exp(base[rows, targets])
    n = len(targets)
    sq = dp**2
    return {
        "full": full, "kld": bucketed,
        "mean_kld": bucketed.mean(), "mean_kld_err": bucketed.std() / np.sqrt(n - 1),
        "rms_dp": np.sqrt(sq.mean()), "rms_dp_err": 0.5 / np.sqrt(sq.mean()) * sq.std() / np.sqrt(n - 1),
        "same_top": np.mean(base.argmax(axis=1) == quant.argmax(axis=1)),
        "ppl_base": np.exp(-base[rows, targets].mean()),
        "percentiles": {name: np.percentile(bucketed, 100 * q_) for name, q_ in kld.PERCENTILES},
    }


def test_kl_divergence_matches_full_distributions(text):
    n_ctx, chunks = 64, 4
    base, noisy = tiny_llama("base"), tiny_llama("noisy")
    results = perplexity([base, noisy], text, Settings(n_ctx=n_ctx, n_batch=128, chunks=chunks, threads=2,
                                                       n_gpu_layers=0, kl_top_k=64))
    assert results[0].kl is None and results[0].is_base
    stats = results[1].kl
    lb, targets = reference_logprobs(base, text, n_ctx, chunks)
    lq, _ = reference_logprobs(noisy, text, n_ctx, chunks)
    ref = reference_kl(lb, lq, targets, stats.top_k)
    assert stats.n_positions == len(targets) and stats.top_k == 64
    assert_rel(stats.mean_kld, ref["mean_kld"])
    assert_rel(stats.mean_kld_err, ref["mean_kld_err"], 1e-5)
    for name, value in ref["percentiles"].items():
        assert_rel(stats.kld_percentiles[name], value, 1e-5)
    assert_rel(stats.rms_dp, ref["rms_dp"])
    assert_rel(stats.rms_dp_err, ref["rms_dp_err"], 1e-5)
    assert stats.same_top == pytest.approx(ref["same_top"], abs=0)
    assert_rel(stats.ppl_base, ref["ppl_base"])
    assert_rel(stats.ppl_base, results[0].ppl)
    # the tail bucket is a lower bound of the full-vocabulary KLD
    assert stats.mean_kld <= ref["full"].mean() * (1 + 1e-9)
    assert 0.0 < stats.same_top < 1.0 and stats.mean_kld > 1e-3  # the noise is visible: the check can fail


def llama_percentile(values: np.ndarray, fraction: float) -> float:
    """llama-perplexity's percentile: linear between the two nearest of the sorted values; its median is the
    mean of the two middle ones, which is the same."""
    v = np.sort(values)
    if fraction <= 0 or fraction >= 1:
        return float(v[0] if fraction <= 0 else v[-1])
    p = fraction * (len(v) - 1)
    i = int(p)
    return float((1 - (p - i)) * v[i] + (p - i) * v[min(i + 1, len(v) - 1)])


def test_every_kl_statistic_matches_numpy(text):
    """With K = n_vocab nothing is left out, so every printed figure has an exact value from the two models' full
    log-probabilities: KLD and its percentiles, Δp = p(Q) − p(base) of the true token (its sign says which model
    is more sure), RMS Δp, ln(PPL(Q)/PPL(base)) with its covariance-aware ±, same top token and PPL(base)."""
    n_ctx, chunks = 64, 4
    base, noisy = tiny_llama("base"), tiny_llama("noisy")
    results = perplexity([base, noisy], text, Settings(n_ctx=n_ctx, n_batch=128, chunks=chunks, threads=2,
                                                       n_gpu_layers=0, kl_top_k=10**6))
    s = results[1].kl
    lb, targets = reference_logprobs(base, text, n_ctx, chunks)
    lq, _ = reference_logprobs(noisy, text, n_ctx, chunks)
    n_vocab, n = lb.shape[1], len(targets)
    assert s.top_k == n_vocab and s.n_positions == n

    rows = np.arange(n)
    nll_b, nll_q = -lb[rows, targets], -lq[rows, targets]
    kl_div = (np.exp(lb) * (lb - lq)).sum(axis=1)
    dp = np.exp(-nll_q) - np.exp(-nll_b)

    def sem(x: np.ndarray) -> float:  # the standard error llama-perplexity prints
        return float(x.std() / np.sqrt(n - 1))

    ppl_b = float(np.exp(nll_b.mean()))
    cov = float(np.mean((nll_q - nll_q.mean()) * (nll_b - nll_b.mean()))) / (n - 1)
    top = float(np.mean(lb.argmax(axis=1) == lq.argmax(axis=1)))
    rms = float(np.sqrt(np.mean(dp**2)))
    expected = {
        "ppl_base": ppl_b, "ppl_base_err": ppl_b * sem(nll_b),
        "ln_ppl_ratio": float(nll_q.mean() - nll_b.mean()),
        "ln_ppl_ratio_err": float(np.sqrt(sem(nll_q)**2 + sem(nll_b)**2 - 2 * cov)),
        "mean_kld": float(kl_div.mean()), "mean_kld_err": sem(kl_div),
        "mean_dp": float(dp.mean()), "mean_dp_err": sem(dp),
        "rms_dp": rms, "rms_dp_err": 0.5 / rms * sem(dp**2),
        "same_top": top, "same_top_err": float(np.sqrt(top * (1 - top) / (n - 1))),
    }
    for name, value in expected.items():
        assert_rel(getattr(s, name), value, 1e-5)
    for name, q in kld.PERCENTILES:
        assert_rel(s.kld_percentiles[name], llama_percentile(kl_div, q), 1e-5)
    # the figures agree with each other as the report reads them
    assert_rel(s.ppl_base, results[0].ppl, 1e-9)
    assert_rel(s.ln_ppl_ratio, float(np.log(results[1].ppl / results[0].ppl)), 1e-9)
    # the checks can fail: the noise is visible, Δp is clearly signed, the errors are not zero
    assert 0.0 < top < 1.0 and s.mean_kld > 1e-3
    print({k: f"{v:.6g}" for k, v in expected.items()})
    assert expected["mean_dp"] < 0 < expected["mean_dp_err"]  # the noisy model is less sure of the true token
    assert abs(expected["ln_ppl_ratio"]) > 1e-3 and expected["ln_ppl_ratio_err"] > 0


def test_base_data_stays_small():
    b = kld.BaseLogProbs(n_vocab=152064, k=kld.TOP_K)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((255, 152064)).astype(np.float32)
    from quantkit.measure.perplexity import log_partition

    log_z = log_partition(logits)
    b.add(logits, log_z, log_z - logits[:, 0])
    per_position = b.nbytes / 255
    assert per_position == 8 * kld.TOP_K + 16  # llama-perplexity keeps 2 × n_vocab = 304 KB
    # a flat distribution over 152k tokens leaves almost all its mass in the tail bucket
    nll, ids, logp, tail = b.rows(0, 255)
    assert np.allclose(np.exp(logp.astype(np.float64)).sum(axis=1) + np.exp(tail), 1.0, atol=1e-6)
