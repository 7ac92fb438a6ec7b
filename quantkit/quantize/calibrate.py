"""damage.py's errors calibrated against the KL-divergence each tensor alone causes (`--calibrate`).

Why. damage.py's error is the expected squared perturbation of each matmul's output per token: one unit for
every tensor, but not one effect on the output distribution. The residual stream grows with depth, so a late
layer's large absolute error is a small relative one, and a mix planned on raw errors over-spends on late layers
(benchmarks/mixes_results.md: 1.10× the standard Q5_K_M's KLD at its size, off the Q4_1 grid).

How. One group is one tensor (one tensor kind in one layer, token_embd/output apart). For each, a scratch copy
of the base gets only that tensor through ggml's round trip of a probe type (Q4_0 where its block fits, with the
tensor's importance values, as libllama quantizes it), and the copy is scored on a few chunks of calibration
text: the mean KL-divergence from the base at llama-perplexity's positions (the second half of each chunk), with
measure/kld.py's statistic. The tensor's weight is that KLD over its damage at the probe type; every option of
the tensor has its error multiplied by it, so a calibrated error is in KLD units. Summed over tensors it
predicts a plan's KLD to second order (the KLD of small, independent perturbations adds), and within a tensor
the types keep damage.py's ratios.

Cost. One forward pass per tensor over `chunks` × `n_ctx` tokens, plus one for the base and a reload of the
(page-cached) scratch copy each time: on SmolLM2-135M (211 tensors, 1 chunk of 512) about two to three minutes on
two threads (benchmarks/mixes_results.md states the figure measured). It is kept in quantkit's cache
(`files.cache_dir("calibration")`, keyed by the base file, the importance matrix, the tokens and the settings),
so only the first plan of a base pays for it; without `--calibrate` nothing of this runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

from ..files import atomic_file, cache_dir
from ..gguf.reader import GGUFFile, read_gguf
from .damage import Option, TensorOptions

log = logging.getLogger(__name__)

PROBE = T.Q4_0  # low enough that one tensor's KLD stands out of the noise, fine enough to stay second order
CHUNKS = 1
N_CTX = 512
FORMAT = 1  # of the cached file


@dataclass
class Calibration:
    """Per tensor: the probe type, the mean KLD the base has with only that tensor at the probe type, and the
    tensor's damage (damage.py) at that type; `weight` turns damage into predicted KLD."""

    probe: dict[str, str]
    kld: dict[str, float]
    damage: dict[str, float]
    n_positions: int
    seconds: float
    digest: str = ""  # of the inputs: what the cache file is named by and a planned file records

    def weight(self, name: str) -> float | None:
        if name not in self.kld:
            return None
        return self.kld[name] / self.damage[name] if self.damage[name] > 0 else None

    def weights(self) -> dict[str, float]:
        """Every weight; a tensor whose probe did no damage (so none could be measured) takes the median."""
        known = {n: w for n in self.kld if (w := self.weight(n)) is not None}
        fallback = float(np.median(list(known.values()))) if known else 1.0
        return {n: known.get(n, fallback) for n in self.kld}


def calibrated(measured: list[TensorOptions], calibration: Calibration) -> list[TensorOptions]:
    """`measured` with every tensor's errors multiplied by its weight (tensors without one keep theirs)."""
    weights = calibration.weights()
    out = []
    for t in measured:
        w = weights.get(t.name)
        if w is None:
            out.append(t)
            continue
        out.append(replace(t, options=[Option(o.type, o.n_bytes, o.error * w) for o in t.options]))
    return out


def probe_type(t: TensorOptions) -> str | None:
    """The type a tensor is probed with: Q4_0 where it is a candidate, else its smallest candidate that differs
    from the base type; None when it has no other choice."""
    names = [o.type for o in t.options]
    if PROBE.name in names:
        return PROBE.name
    return next((o.type for o in t.options if o.type != t.base_type), None)


def calibration_key(base: Path, imatrix: dict[str, np.ndarray] | None, tokens: np.ndarray, n_ctx: int,
                    chunks: int) -> str:
    st = Path(base).stat()
    h = hashlib.sha256()
    h.update(json.dumps({"base": [Path(base).name, st.st_size, st.st_mtime_ns], "ctx": n_ctx, "chunks": chunks,
                         "probe": PROBE.name, "format": FORMAT}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(tokens[:n_ctx * chunks], dtype=np.int32).tobytes())
    for name in sorted(imatrix or {}):
        h.update(name.encode())
        h.update(np.ascontiguousarray(imatrix[name], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def calibrate(base: Path | GGUFFile, measured: list[TensorOptions], imatrix: dict[str, np.ndarray] | None,
              tokens: np.ndarray, *, n_ctx: int = N_CTX, chunks: int = CHUNKS, threads: int | None = None,
              n_gpu_layers: int | str = 0, progress: Callable[[int, int, str], None] | None = None,
              cache: bool = True) -> Calibration:
    """Each tensor of `measured` (damage.measure of `base` with `imatrix`) probed alone on the first `chunks`
    chunks of `n_ctx` of `tokens` (see the module docstring); read from quantkit's cache when it was done before."""
    from ..measure.perplexity import make_plan

    base = read_gguf(base)
    plan = make_plan(len(tokens), n_ctx, n_ctx, chunks)
    key = calibration_key(base.path, imatrix, tokens, n_ctx, plan.n_chunks)
    path = cache_dir("calibration") / f"{base.path.stem}-{key}.json"
    if cache and path.is_file():
        try:
            found = Calibration(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            found = None
        if found is not None and set(found.kld) >= {t.name for t in measured if probe_type(t)}:
            log.info("using the cached KLD calibration %s", path.name)
            return found
    result = _probe_all(base, measured, imatrix, tokens, plan, threads, n_gpu_layers, progress)
    result.digest = key
    if cache:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(asdict(result), indent=1))
    return result


def _probe_all(base: GGUFFile, measured: list[TensorOptions], imatrix, tokens: np.ndarray, plan, threads,
               n_gpu_layers, progress) -> Calibration:
    from gguf import GGUFReader

    from .. import runtime
    from ..measure import kld as kl
    from ..measure.perplexity import Scores, score_rows, scored_logits
    from ..runtime.offload import load_model

    start = time.perf_counter()
    probes = {t.name: p for t in measured if (p := probe_type(t)) is not None}
    damage = {t.name: next(o.error for o in t.options if o.type == probes[t.name]) for t in measured
              if t.name in probes}

    def run(model_file, base_data: kl.BaseLogProbs | None) -> kl.BaseLogProbs | float:
        """Score `model_file`: the base's log-probabilities kept (no `base_data`), or the mean KLD from them."""
        with load_model(model_file, n_gpu_layers, plan.n_ctx) as model, \
                runtime.create_context(model, plan.n_seq * plan.n_ctx, plan.n_batch, n_seq_max=plan.n_seq,
                                       threads=threads) as ctx:
            record = kl.BaseLogProbs(model.n_vocab, kl.TOP_K) if base_data is None else None
            scores = Scores()
            for logits, targets in scored_logits(ctx, tokens, plan):
                score_rows(logits, targets, scores, record, base_data)
        return record if record is not None else float(np.concatenate(scores.kld).mean())

    klds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="calibrate-", dir=cache_dir("tmp")) as tmp:
        scratch = Path(tmp) / base.path.name
        shutil.copyfile(base.path, scratch)
        scratch_file = read_gguf(scratch)  # read once: every reload below is handed it
        reader = GGUFReader(scratch, "r+")
        tensors = {t.name: t for t in reader.tensors}
        base_data = run(base, None)
        try:
            for done, name in enumerate(probes, start=1):
                t = tensors[name]
                original = np.array(t.data, copy=True)
                t.data[...] = _round_tripped(t, T[probes[name]], imatrix.get(name) if imatrix else None)
                try:
                    klds[name] = run(scratch_file, base_data)
                finally:
                    t.data[...] = original
                if progress:
                    progress(done, len(probes), "calibrating")
                log.debug("%s at %s: KLD %.3g, damage %.3g", name, probes[name], klds[name], damage[name])
            n_positions = base_data.n_positions
        finally:
            base_data.close()
            del reader, tensors
    return Calibration(probes, klds, damage, n_positions, round(time.perf_counter() - start, 1))


def _round_tripped(t, qtype: T, importance: np.ndarray | None) -> np.ndarray:
    """Tensor `t`'s data (F32/F16/BF16, as the reader holds it) after ggml's round trip of `qtype`, in its own
    dtype: what a file with this one tensor at `qtype` computes with."""
    from ..runtime.quants import round_trip

    n_cols = int(t.shape[0])
    raw = np.asarray(t.data)
    kind = T(t.tensor_type)
    if kind == T.BF16:
        rows = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(-1, n_cols)
    else:
        rows = raw.astype(np.float32).reshape(-1, n_cols)
    if importance is not None and importance.size % n_cols == 0 and importance.size > n_cols:  # per expert
        per = importance.reshape(-1, n_cols)
        n_per = rows.shape[0] // per.shape[0]
        deq = np.concatenate([round_trip(int(qtype), rows[e * n_per:(e + 1) * n_per], per[e])[0]
                              for e in range(per.shape[0])])
    else:
        values = importance if importance is not None and importance.size == n_cols else None
        deq, _ = round_trip(int(qtype), rows, values)
    if kind == T.BF16:
        bits = deq.view(np.uint32)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).reshape(raw.shape)
    return deq.astype(raw.dtype).reshape(raw.shape)


def check_dataset(dataset: str) -> None:
    """Refuse, before any work, a `--calibrate` dataset that has no calibration text."""
    from ..errors import InvalidArgumentError
    from ..imatrix.calibration import PAIRS

    if dataset not in PAIRS:
        raise InvalidArgumentError(f"--calibrate {dataset!r}: no calibration text is paired with that dataset",
                                   hint=f"choose one of: {', '.join(PAIRS)}")


def calibrate_on(base: Path | GGUFFile, measured: list[TensorOptions], imatrix: dict[str, np.ndarray] | None,
                 dataset: str, *, threads: int | None = None, progress=None) -> Calibration:
    """`calibrate` on the calibration text paired with scoring dataset `dataset` (imatrix.calibration.PAIRS: the
    text an `--imatrix auto:DATASET` is computed on, never the scored one), tokenized by the base's vocabulary."""
    from ..imatrix.calibration import calibration_text
    from ..runtime import load_vocabulary

    check_dataset(dataset)
    base = read_gguf(base)
    text = calibration_text(dataset).text
    with load_vocabulary(base) as vocab:
        tokens = vocab.tokenize(text, add_special=True)
    return calibrate(base, measured, imatrix, tokens, threads=threads, progress=progress)
