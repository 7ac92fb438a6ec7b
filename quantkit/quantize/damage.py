"""How much each candidate type damages each tensor of a base GGUF, measured through ggml's own round trip.

Damage. For every tensor libllama would quantize and every candidate type whose block size divides the tensor's
rows (so libllama's fallback never changes a planned type), a sample of rows goes through ggml's own
`ggml_quantize_chunk` (with the tensor's importance values, as libllama passes them) and back through the
type's `to_float`. The error is the importance-weighted squared difference, Σ_j imatrix_j (w_j - ŵ_j)², scaled
to all rows: with imatrix_j the mean square of input column j over the calibration text, that is the expected
squared perturbation of the matmul's output per token, so the errors of different tensors are in the same
unit and add up. A matmul without importance values (output without --process-output, a tied token_embd) is
weighted with the mean importance of the tensors reading vectors of the same width, or 1 without an imatrix;
an untied token_embd is a lookup whose row is added to the residual as it is: weight 1, and since one row is
read per token its error is the mean over rows, not the sum.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

from ..gguf.header import HeaderTensor, tensor_bytes
from ..gguf.reader import GGUFFile
from ..quant_types import MIX_IMATRIX_TYPES, MIX_TYPES, TENSOR_TYPES_NEEDING_IMATRIX, block_size

# values measured per tensor: that many / the row length rows, evenly spread (at least MIN_ROWS; all rows when
# the tensor has fewer). 64 Ki values keep SmolLM2's measurement near a minute on one core, IQ types included.
SAMPLE_VALUES = 1 << 16
MIN_ROWS = 16


@dataclass
class Option:
    type: str
    n_bytes: int  # tensor data
    error: float


@dataclass
class TensorOptions:
    name: str
    shape: tuple[int, ...]
    base_type: str
    options: list[Option]  # by size, smallest first


def candidate_types(tensor: HeaderTensor, has_imatrix_values: bool, base_type: T,
                    allowed: list[T] | None = None) -> list[T]:
    """The ggml types a plan may give `tensor`: those whose block divides its rows (libllama's fallback would
    change any other), the imatrix-only ones only where the tensor has importance values; within `allowed`."""
    pool = list(MIX_TYPES) + (list(MIX_IMATRIX_TYPES) if has_imatrix_values else [])
    if allowed is not None:
        pool = [t for t in pool if t in allowed]
    if base_type == T.BF16:
        pool.append(T.BF16)
    if base_type == T.F32:
        pool.append(T.F32)
    return sorted({t for t in pool if tensor.shape[0] % block_size(t) == 0
                   and (has_imatrix_values or t not in TENSOR_TYPES_NEEDING_IMATRIX)},
                  key=lambda t: (tensor_bytes(t, tensor.shape), t.name))


def _weights_for(name: str, n_cols: int, n_rows: int, imatrix: dict[str, np.ndarray] | None,
                 by_width: dict[int, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray]:
    """(the importance values libllama gets for this tensor or None, the column weights of its error)."""
    values = imatrix.get(name) if imatrix else None
    if values is not None and values.size % n_cols == 0:
        return values.reshape(-1, n_cols), values.reshape(-1, n_cols)
    weight = by_width.get(n_cols)
    return None, (weight if weight is not None else np.ones(n_cols, np.float32))[None, :]


def measure(base: Path | GGUFFile, imatrix: dict[str, np.ndarray] | None = None, *,
            sample_values: int = SAMPLE_VALUES, threads: int | None = None, types: list[T] | None = None,
            relative: bool = False, progress: Callable[[int, int, str], None] | None = None) -> list[TensorOptions]:
    """Size and damage of every candidate type (within `types`, if given) for every tensor libllama would
    quantize in `base` (a path, or a GGUFFile already read; tensors measured on `threads` threads: ggml's
    quantizers run outside Python's lock).
    `relative` (an experiment, see benchmarks/mixes_results.md): each error divided by the same weighted sum of
    the weights themselves, i.e. relative to the tensor's output energy instead of absolute."""
    from concurrent.futures import ThreadPoolExecutor
    from ..gguf.reader import open_gguf
    from ..memory.tensor_types import allows_quantization

    reader = open_gguf(base)
    tensors = [(t, HeaderTensor(t.name, tuple(int(d) for d in t.shape), T(t.tensor_type))) for t in reader.tensors]
    tensors = [(t, h) for t, h in tensors if allows_quantization(h)]
    tied = not any(h.name == "output.weight" for _, h in tensors)
    by_width: dict[int, np.ndarray] = {}
    if imatrix:
        groups: dict[int, list[np.ndarray]] = {}
        for _, h in tensors:
            v = imatrix.get(h.name)
            if v is not None and v.size == h.shape[0]:
                groups.setdefault(h.shape[0], []).append(v)
        by_width = {w: np.mean(vs, axis=0).astype(np.float32) for w, vs in groups.items()}
    total = sum(h.n_elements for _, h in tensors)
    done = 0

    def one(pair) -> TensorOptions:
        return _measure_tensor(*pair, imatrix, by_width, tied, sample_values, types, relative)

    out = []
    with ThreadPoolExecutor(max(1, threads or 1)) as pool:
        for (_, h), options in zip(tensors, pool.map(one, tensors)):
            out.append(options)
            done += h.n_elements
            if progress:
                progress(done, total, "measuring")
    return out


def _measure_tensor(t, h: HeaderTensor, imatrix, by_width, tied: bool, sample_values: int,
                    allowed: list[T] | None, relative: bool = False) -> TensorOptions:
    """One tensor's options: each candidate type's size and its error on a sample of rows, scaled to all."""
    from ..runtime.quants import round_trip

    n_cols = h.shape[0]
    data = np.asarray(t.data)
    if h.type == T.BF16:
        data = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    rows = data.reshape(-1, n_cols)
    n_rows = rows.shape[0]
    n_sample = min(n_rows, max(MIN_ROWS, sample_values // n_cols))
    pick = np.unique(np.linspace(0, n_rows - 1, n_sample).round().astype(np.int64))
    sample = rows[pick].astype(np.float32)
    lookup = h.name == "token_embd.weight" and not tied  # one row per token: the mean, not the sum
    values, weights = _weights_for(h.name, n_cols, n_rows, imatrix, {} if lookup else by_width)
    per_expert = n_rows // values.shape[0] if values is not None else n_rows
    row_weights = weights[np.minimum(pick // max(1, n_rows // weights.shape[0]), weights.shape[0] - 1)]
    scale = (1.0 if lookup else n_rows) / pick.size
    options = []
    for qt in candidate_types(h, values is not None, h.type, allowed):
        if qt == h.type:
            err = 0.0
        else:
            err = 0.0
            for e in np.unique(pick // per_expert):  # each expert's rows with its own importance values
                sel = (pick // per_expert) == e
                deq, _ = round_trip(int(qt), sample[sel], values[e] if values is not None else None)
                err += float((row_weights[sel] * (sample[sel] - deq) ** 2).sum(dtype=np.float64))
            err *= scale
            if relative:
                err /= max(float((row_weights * sample ** 2).sum(dtype=np.float64)) * scale, 1e-30)
        options.append(Option(qt.name, tensor_bytes(qt, h.shape), err))
    return TensorOptions(h.name, h.shape, h.type.name, options)
