"""Perplexity the way llama.cpp's llama-perplexity computes it, for one model or a ladder, with KL-divergence.

The method (tools/perplexity/perplexity.cpp): tokenize the whole text once, with BOS; cut it into chunks of
n_ctx tokens; make each chunk's first token BOS when the vocabulary adds one; decode n_seq = n_batch / n_ctx
chunks at once (one KV sequence each); score positions n_ctx/2 … n_ctx−2 of each chunk, each predicting the next
token. PPL = exp(mean NLL), ± = PPL · sqrt(var(NLL) / (N − 1)). Only the scored positions' logits are asked of
llama.cpp, and they are read in place from its output buffer.

With several files the first is the base (or `kl_base`): its top-K log-probabilities are kept (see kld.py) and
every other file's distributions are compared with them.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import kld as kl
from ..errors import ContextTooLargeError, InvalidArgumentError, TextTooShortError, VocabularyMismatchError
from ..gguf.info import GGUFInfo, inspect_gguf
from ..runtime.offload import load_model
from ..runtime import Batch, Context, Model, create_context, load_vocabulary

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_CTX = 512
DEFAULT_BATCH = 2048  # llama.cpp's default n_batch: 4 chunks of 512 per decode
_ROWS = 64  # rows of logits turned into probabilities at a time: keeps memory flat with 150k vocabularies

Progress = Callable[[int, int, float], None]  # (chunks done, chunks in all, running PPL)


@dataclass(frozen=True)
class Plan:
    """How the token stream is cut and batched, as llama-perplexity does it."""

    n_ctx: int
    n_batch: int
    n_seq: int
    n_chunks: int

    @property
    def first(self) -> int:
        return self.n_ctx // 2

    @property
    def n_scored(self) -> int:  # per chunk
        return self.n_ctx - 1 - self.first


def make_plan(n_tokens: int, n_ctx: int, n_batch: int = DEFAULT_BATCH, chunks: int | None = None) -> Plan:
    if n_ctx < 4:
        raise InvalidArgumentError(f"--ctx must be at least 4, not {n_ctx}")
    if n_tokens < 2 * n_ctx:
        raise TextTooShortError(f"the text is {n_tokens} tokens long; --ctx {n_ctx} needs at least {2 * n_ctx}")
    n_chunks = n_tokens // n_ctx if chunks is None else min(chunks, n_tokens // n_ctx)
    if n_chunks < 1:
        raise InvalidArgumentError(f"--chunks must be at least 1, not {chunks}")
    n_seq = max(1, n_batch // n_ctx)
    return Plan(n_ctx, min(n_batch, n_seq * n_ctx), n_seq, n_chunks)


# ---- one model over the plan -------------------------------------------------------------------------------

def scored_logits(ctx: Context, tokens: np.ndarray, plan: Plan) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per chunk, in order: the scored positions' logits (n_scored, n_vocab) and the tokens they predict.
    The logits are a view of llama.cpp's buffer, valid until the next item is asked for."""
    n_ctx, first = plan.n_ctx, plan.first
    model = ctx.model
    with Batch(plan.n_batch) as batch:
        for i in range(0, plan.n_chunks, plan.n_seq):
            n_seq = min(plan.n_seq, plan.n_chunks - i)
            ctx.clear()
            chunk = tokens[i * n_ctx:(i + n_seq) * n_ctx].reshape(n_seq, n_ctx).copy()
            if model.add_bos:
                chunk[:, 0] = model.bos
            logits = _decode_chunks(ctx, batch, chunk, plan)
            for s in range(n_seq):
                start = (i + s) * n_ctx
                yield logits[s], tokens[start + first + 1:start + n_ctx]


def _decode_chunks(ctx: Context, batch: Batch, chunk: np.ndarray, plan: Plan) -> np.ndarray:
    """Decode `chunk` (n_seq rows of n_ctx tokens) in batches of n_batch; logits of the scored positions."""
    n_seq, n_ctx = chunk.shape
    pos = np.arange(n_ctx, dtype=np.int32)
    wanted = (pos >= plan.first) & (pos <= n_ctx - 2)
    if n_seq * n_ctx <= plan.n_batch:  # the usual case: all chunks in one decode, logits read in place
        batch.set(chunk.ravel(), np.tile(pos, n_seq), np.repeat(np.arange(n_seq, dtype=np.int32), n_ctx),
                  np.tile(wanted, n_seq))
        ctx.decode(batch)
        return ctx.output_logits(n_seq * plan.n_scored).reshape(n_seq, plan.n_scored, -1)
    out = np.empty((1, plan.n_scored, ctx.model.n_vocab), dtype=np.float32)  # n_batch < n_ctx: one chunk, pieces
    done = 0
    for lo in range(0, n_ctx, plan.n_batch):
        sl = slice(lo, min(lo + plan.n_batch, n_ctx))
        batch.set(chunk[0, sl], pos[sl], np.zeros(sl.stop - lo, dtype=np.int32), wanted[sl])
        ctx.decode(batch)
        n_out = int(wanted[sl].sum())
        if n_out:
            out[0, done:done + n_out] = ctx.output_logits(n_out)
            done += n_out
    return out


def log_partition(logits: np.ndarray) -> np.ndarray:
    """ln Σ exp(logits) per row, float64 (exp in float32 and a float64 sum, as llama.cpp does)."""
    m = logits.max(axis=1)
    s = np.exp(logits - m[:, None]).sum(axis=1, dtype=np.float64)
    return m.astype(np.float64) + np.log(s)


@dataclass
class Scores:
    """Per scored position, in order: NLL of the true token, and against a base (when there is one) KLD, Δp and
    whether the top token is the base's."""

    nll: list[np.ndarray] = field(default_factory=list)
    kld: list[np.ndarray] = field(default_factory=list)
    p_diff: list[np.ndarray] = field(default_factory=list)
    same_top: list[np.ndarray] = field(default_factory=list)
    n: int = 0
    sum_nll: float = 0.0

    def running_ppl(self) -> float:
        return float(np.exp(self.sum_nll / self.n)) if self.n else float("nan")


def score_rows(logits: np.ndarray, targets: np.ndarray, scores: Scores, record: kl.BaseLogProbs | None,
               base: kl.BaseLogProbs | None) -> None:
    for lo in range(0, len(targets), _ROWS):
        rows, tgt = logits[lo:lo + _ROWS], targets[lo:lo + _ROWS]
        log_z = log_partition(rows)
        nll = log_z - rows[np.arange(len(tgt)), tgt].astype(np.float64)
        if record is not None:
            record.add(rows, log_z, nll)
        if base is not None:
            k, dp, top = kl.compare(rows, log_z, nll, base.rows(scores.n, len(tgt)))
            scores.kld.append(k)
            scores.p_diff.append(dp)
            scores.same_top.append(top)
        scores.nll.append(nll)
        scores.n += len(tgt)
        scores.sum_nll += float(nll.sum())


def ppl_and_error(nll: np.ndarray) -> tuple[float, float]:
    """PPL and its ± exactly as llama-perplexity's final estimate."""
    n = len(nll)
    mean = float(np.sum(nll) / n)
    var = float(np.sum(np.square(nll)) / n) - mean * mean
    ppl = float(np.exp(mean))
    return ppl, (ppl * float(np.sqrt(var / (n - 1))) if var > 0 else float("nan"))


# ---- results ------------------------------------------------------------------------------------------------

@dataclass
class PerplexityResult:
    path: str
    file_type: str | None
    file_size: int
    bits_per_weight: float
    n_ctx: int
    n_batch: int
    n_chunks: int
    n_scored: int
    ppl: float
    ppl_err: float
    seconds: float
    tokens_per_second: float
    is_base: bool = False
    kl: kl.KLStats | None = None
    placement: list[str] = field(default_factory=list)  # each layer's device, the output layer last


@dataclass
class Settings:
    n_ctx: int = DEFAULT_CTX
    n_batch: int = DEFAULT_BATCH
    chunks: int | None = None
    threads: int | None = None
    n_gpu_layers: int | str = "auto"
    kl_top_k: int = kl.TOP_K
    rpc: list[str] | None = None  # ggml-rpc-server hosts (HOST:PORT) to offload to as well


def evaluate(model: Model, info: GGUFInfo, tokens: np.ndarray, plan: Plan, settings: Settings,
             record: kl.BaseLogProbs | None = None, base: kl.BaseLogProbs | None = None,
             progress: Progress | None = None) -> tuple[PerplexityResult, Scores]:
    """Run one loaded model over the plan."""
    scores = Scores()
    t0 = time.perf_counter()
    with create_context(model, plan.n_seq * plan.n_ctx, plan.n_batch, n_seq_max=plan.n_seq,
                        threads=settings.threads) as ctx:
        for done, (logits, targets) in enumerate(scored_logits(ctx, tokens, plan), start=1):
            score_rows(logits, targets, scores, record, base)
            if progress:
                progress(done, plan.n_chunks, scores.running_ppl())
    seconds = time.perf_counter() - t0
    nll = np.concatenate(scores.nll)
    ppl, err = ppl_and_error(nll)
    n_eval = plan.n_chunks * plan.n_ctx
    result = PerplexityResult(
        path=str(info.path), file_type=info.file_type, file_size=info.file_size,
        bits_per_weight=info.bits_per_weight, n_ctx=plan.n_ctx, n_batch=plan.n_batch, n_chunks=plan.n_chunks,
        n_scored=len(nll), ppl=ppl, ppl_err=err, seconds=seconds, tokens_per_second=n_eval / seconds,
        is_base=record is not None,
    )
    if base is not None:
        nll_base = base.rows(0, len(nll))[0]
        result.kl = kl.kl_stats(np.concatenate(scores.kld), np.concatenate(scores.p_diff),
                                np.concatenate(scores.same_top), nll, nll_base, base.k)
    log.info("%s: PPL %.4f ± %.5f (%.1f tokens/s)", Path(info.path).name, ppl, err, result.tokens_per_second)
    return result, scores


def check_context(info: GGUFInfo, n_ctx: int) -> None:
    if info.context_length and n_ctx > info.context_length:
        raise ContextTooLargeError(
            f"--ctx {n_ctx} is larger than {Path(info.path).name}'s training context of {info.context_length}")


def vocabulary_digest(path: str | Path) -> tuple[int, str]:
    """Number of tokens and a digest of their texts (read by libllama, vocabulary only)."""
    with load_vocabulary(path) as vocab:
        h = hashlib.sha256()
        for text in vocab.token_texts():
            h.update(text + b"\0")
        return vocab.n_vocab, h.hexdigest()


def check_same_vocabulary(base: GGUFInfo, others: list[GGUFInfo]) -> None:
    n_base, digest = vocabulary_digest(base.path)
    for info in others:
        n, d = vocabulary_digest(info.path)
        if (n, d) != (n_base, digest):
            what = f"{n} vs {n_base} tokens" if n != n_base else "same size, different tokens"
            raise VocabularyMismatchError(
                f"{Path(info.path).name} and the KL base {Path(base.path).name} have different vocabularies ({what})")


def perplexity(paths: list[str | Path], text: bytes, settings: Settings = Settings(),
               kl_base: str | Path | None = None, progress: Callable[[str], Progress] | None = None,
               ) -> list[PerplexityResult]:
    """PPL of each model on `text`; with a base (`kl_base`, else the first of several files), KL-divergence of
    every other model from it. The base comes first in the results. `progress(name)` gives a per-model callback."""
    paths = [Path(p) for p in paths]
    if kl_base is not None:
        kl_base = Path(kl_base)
        paths = [kl_base] + [p for p in paths if p.resolve() != kl_base.resolve()]
    infos = [inspect_gguf(p) for p in paths]  # every file checked before any work
    for info in infos:
        check_context(info, settings.n_ctx)
    with_kl = len(infos) > 1
    if with_kl:
        check_same_vocabulary(infos[0], infos[1:])

    results: list[PerplexityResult] = []
    base_data: kl.BaseLogProbs | None = None
    tokens = plan = None
    try:
        for i, info in enumerate(infos):
            with load_model(info.path, settings.n_gpu_layers, settings.n_ctx, rpc=settings.rpc) as model:
                if tokens is None:
                    tokens = model.tokenize(text, add_special=True)
                    plan = make_plan(len(tokens), settings.n_ctx, settings.n_batch, settings.chunks)
                    log.info("%d tokens; %d chunks of %d, %d per decode", len(tokens), plan.n_chunks, plan.n_ctx,
                             plan.n_seq)
                if with_kl and i == 0:
                    base_data = kl.BaseLogProbs(model.n_vocab, settings.kl_top_k)
                cb = progress(Path(info.path).name) if progress else None
                record = base_data if i == 0 else None
                base = base_data if i > 0 else None
                result, _ = evaluate(model, info, tokens, plan, settings, record=record, base=base, progress=cb)
                result.placement = model.layer_devices
                if record is not None:
                    log.info("base data kept for KL: %.1f MiB", record.nbytes / 2**20)
            results.append(result)
    finally:
        if base_data is not None:
            base_data.close()
    return results


def ladder_table(results: list[PerplexityResult]) -> pd.DataFrame:
    """One row per model: type, size, bpw, PPL ± err, ΔPPL % against the first, mean KLD, same-top %, tokens/s."""
    import pandas as pd  # here, not at the top: the CLI imports this module at start-up for every command

    base = results[0].ppl
    rows = []
    for r in results:
        rows.append({
            "file": Path(r.path).name,
            "type": r.file_type,
            "size_gib": r.file_size / 2**30,
            "bpw": r.bits_per_weight,
            "ppl": r.ppl,
            "ppl_err": r.ppl_err,
            "delta_ppl_pct": 100.0 * (r.ppl / base - 1.0),
            "mean_kld": r.kl.mean_kld if r.kl else (0.0 if r.is_base else None),
            "same_top_pct": 100.0 * r.kl.same_top if r.kl else (100.0 if r.is_base else None),
            "tokens_per_s": r.tokens_per_second,
        })
    return pd.DataFrame(rows)
