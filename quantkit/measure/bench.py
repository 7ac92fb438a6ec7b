"""Prompt-processing and generation speed, measured the way llama.cpp's llama-bench measures it.

For each test a fresh context of n_prompt + n_gen cells; one warmup run; then `repetitions` runs, each on an
empty KV cache: pp = the n_prompt random tokens decoded in batches of n_batch (BOS first when the vocabulary adds
it), tg = n_gen single-token decodes, each waited for. tokens/s = tokens / wall time of the run; mean ± sample
standard deviation over the runs.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import runtime
from ..gguf import reader as gguf_file
from ..runtime.offload import load_model
from ..errors import InvalidArgumentError


@dataclass
class BenchResult:
    model: str
    file_type: str | None
    size_bytes: int
    test: str  # "pp512", "tg128"
    n_tokens: int
    threads: int
    n_gpu_layers: int
    mean_tps: float
    std_tps: float
    samples_tps: list[float] = field(default_factory=list)


def bench(paths: list[str | Path], n_prompt: int = 512, n_gen: int = 128, repetitions: int = 5,
          threads: int | None = None, n_gpu_layers: int | str = "auto", n_batch: int = 2048, n_ubatch: int = 512,
          seed: int = 0, progress: Callable[[str], None] | None = None,
          rpc: list[str] | None = None) -> list[BenchResult]:
    """pp{n_prompt} and tg{n_gen} of each GGUF (a test with 0 tokens is skipped), offloading to the RPC servers
    `rpc` (HOST:PORT each) too."""
    if repetitions < 1:
        raise InvalidArgumentError(f"--repetitions must be ≥ 1, not {repetitions}")
    if n_prompt < 0 or n_gen < 0 or n_prompt + n_gen == 0:
        raise InvalidArgumentError(f"nothing to measure: -p {n_prompt} -n {n_gen}",
                                   hint="pass -p and -n ≥ 0, not both 0")
    if n_batch < 1 or n_ubatch < 1:
        raise InvalidArgumentError("--batch and --ubatch must be ≥ 1")
    paths = [Path(p) for p in paths]
    if not paths:
        raise InvalidArgumentError("no model given", hint="pass one or more .gguf files")
    files = [gguf_file.read_gguf(path) for path in paths]  # every file checked before the first one is measured
    threads = threads or runtime.physical_cores()
    results = []
    for path, file in zip(paths, files):
        with load_model(file, n_gpu_layers=n_gpu_layers, n_ctx=n_prompt + n_gen, rpc=rpc) as model:
            ftype = gguf_file.file_type_name(model.meta_int("general.file_type"))
            for name, n_p, n_g in ((f"pp{n_prompt}", n_prompt, 0), (f"tg{n_gen}", 0, n_gen)):
                if n_p + n_g == 0:
                    continue
                if progress:
                    progress(f"{path.name} {name}")
                samples = _run_test(model, n_p, n_g, repetitions, threads, n_batch, n_ubatch, seed)
                results.append(BenchResult(
                    model=path.name, file_type=ftype, size_bytes=file.header.file_size, test=name,
                    n_tokens=n_p + n_g, threads=threads, n_gpu_layers=model.layers_on_gpu,
                    mean_tps=statistics.fmean(samples),
                    std_tps=statistics.stdev(samples) if len(samples) > 1 else 0.0, samples_tps=samples,
                ))
    return results


# ---- one test ---------------------------------------------------------------------------------------------------

def _run_test(model: runtime.Model, n_prompt: int, n_gen: int, repetitions: int, threads: int, n_batch: int,
              n_ubatch: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    with runtime.create_context(model, n_ctx=n_prompt + n_gen, n_batch=n_batch, n_ubatch=n_ubatch,
                                threads=threads) as ctx:
        batch_size = max(1, min(n_batch, n_prompt))
        with runtime.Batch(batch_size) as batch:
            # warmup: the whole prompt, or one generated token (as llama-bench)
            ctx.clear()
            if n_prompt:
                _prompt(ctx, batch, model, n_prompt, rng)
            if n_gen:
                _generate(ctx, batch, model, 1, 0, rng)
            samples = []
            for _ in range(repetitions):
                ctx.clear()
                t0 = time.perf_counter_ns()
                if n_prompt:
                    _prompt(ctx, batch, model, n_prompt, rng)
                if n_gen:
                    _generate(ctx, batch, model, n_gen, n_prompt, rng)
                seconds = (time.perf_counter_ns() - t0) / 1e9
                samples.append((n_prompt + n_gen) / seconds)
    return samples


def _prompt(ctx: runtime.Context, batch: runtime.Batch, model: runtime.Model, n_prompt: int, rng) -> None:
    done = 0
    while done < n_prompt:
        n = min(n_prompt - done, ctx.n_batch)
        tokens = rng.integers(0, model.n_vocab, n, dtype=np.int32)
        if done == 0 and model.add_bos:
            tokens[0] = model.bos
        outputs = np.zeros(n, dtype=bool)
        outputs[-1] = True  # like llama_batch_get_one: only the last token's logits
        batch.set(tokens, np.arange(done, done + n, dtype=np.int32), np.zeros(n, dtype=np.int32), outputs)
        ctx.decode(batch)
        done += n
    ctx.synchronize()


def _generate(ctx: runtime.Context, batch: runtime.Batch, model: runtime.Model, n_gen: int, start: int, rng) -> None:
    token = model.bos if model.add_bos else int(rng.integers(model.n_vocab))
    for i in range(n_gen):
        batch.clear()
        batch.add(token, start + i, 0, True)
        ctx.decode(batch)
        ctx.synchronize()
        token = int(rng.integers(model.n_vocab))
