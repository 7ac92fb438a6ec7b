"""Budget-targeted per-tensor mixes (`--target-size` / `--target-bpw`): each tensor's type chosen so that the
file fits the budget with the least damage; the bytes are still written by libllama's quantizer, told the plan
through its tensor-type overrides.

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

Budget. A multiple-choice knapsack: minimise Σ error over one type per tensor, subject to Σ bytes ≤ budget.
We solve it by a Lagrangian sweep — for a price λ, each tensor independently takes the type minimising
error + λ·bytes; λ is bisected to the cheapest price whose total fits — which lands exactly on the convex hull
of the total (bytes, error) frontier and is optimal for the budget it spends. The gap it leaves (less than one
tensor's step on its own frontier) is then filled greedily: repeatedly take the upgrade with the largest error
reduction per byte that still fits. Why not exact dynamic programming: with hundreds of tensors and budgets of
gigabytes it needs a byte grid, and the hull solution is within one tensor's step of optimal anyway; the sweep is
milliseconds and easy to check.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

from ..errors import InvalidArgumentError
from ..gguf.header import HeaderTensor, layer_of, padded, tensor_bytes
from ..quant_types import MIX_IMATRIX_TYPES, MIX_TYPES, TENSOR_TYPES_NEEDING_IMATRIX, block_size, parse_size


# values measured per tensor: that many / the row length rows, evenly spread (at least MIN_ROWS; all rows when
# the tensor has fewer). 64 Ki values keep SmolLM2's measurement near a minute on one core, IQ types included.
SAMPLE_VALUES = 1 << 16
MIN_ROWS = 16
# metadata written into a planned file (GGUF strings of at most 127 bytes: libllama's kv override limit)
KEY_TARGET = "quantize.mix.target"
KEY_TYPES = "quantize.mix.types"
KEY_PLAN = "quantize.mix.plan_sha256"
KEY_IMATRIX = "quantize.mix.imatrix"
# the file type a plan's file is labelled with, after its largest tensor type (a plan's own types are all set
# by overrides; libllama applies overrides only when the file type's default type is a quantized one)
_FTYPE_OF = {T.Q2_K: "Q2_K", T.Q3_K: "Q3_K_M", T.Q4_0: "Q4_0", T.Q4_1: "Q4_1", T.Q4_K: "Q4_K_M", T.Q5_0: "Q5_0",
             T.Q5_1: "Q5_1", T.Q5_K: "Q5_K_M", T.Q6_K: "Q6_K", T.Q8_0: "Q8_0", T.IQ1_S: "IQ1_S", T.IQ1_M: "IQ1_M",
             T.IQ2_XXS: "IQ2_XXS", T.IQ2_XS: "IQ2_XS", T.IQ2_S: "IQ2_M", T.IQ3_XXS: "IQ3_XXS", T.IQ3_S: "IQ3_S",
             T.IQ4_XS: "IQ4_XS", T.IQ4_NL: "IQ4_NL"}


# ---------------------------------------------------------------------------------------------------------------
# targets


@dataclass(frozen=True)
class Target:
    """A budget: a whole file of at most `size` bytes, or tensor data of at most `bpw` bits per weight."""

    size: int | None = None
    bpw: float | None = None
    text: str | None = None  # the size as the user spelled it

    @property
    def label(self) -> str:
        """The name part of the output file: `MIX-4.50bpw`, `MIX-4.2G` (as given), `MIX-123456789B`."""
        if self.bpw is not None:
            return f"MIX-{self.bpw:.2f}bpw"
        text = re.sub(r"[^0-9A-Za-z.]", "", self.text or "")
        return f"MIX-{text.upper()}" if text else f"MIX-{self.size}B"

    def describe(self) -> str:
        return f"bpw<={self.bpw:g}" if self.bpw is not None else f"size<={self.size}"


def targets(sizes: list[str] | None, bpws: list[float] | None) -> list[Target]:
    out = [Target(size=parse_size(s, "--target-size"), text=s) for s in sizes or []]
    for b in bpws or []:
        if not 1.0 <= b <= 32.0:
            raise InvalidArgumentError(f"--target-bpw {b:g} is out of range", hint="bits per weight between 1 and 32")
        out.append(Target(bpw=float(b)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# measuring


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


def measure(base: Path, imatrix: dict[str, np.ndarray] | None = None, *, sample_values: int = SAMPLE_VALUES,
            threads: int | None = None, types: list[T] | None = None, relative: bool = False,
            progress: Callable[[int, int, str], None] | None = None) -> list[TensorOptions]:
    """Size and damage of every candidate type (within `types`, if given) for every tensor libllama would
    quantize in `base` (tensors measured on `threads` threads: ggml's quantizers run outside Python's lock).
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


# ---------------------------------------------------------------------------------------------------------------
# solving


def _hull(options: list[Option], alignment: int) -> list[int]:
    """Indices of the lower convex hull of (padded bytes, error), by size: the only choices a price can pick."""
    pts = sorted(range(len(options)), key=lambda i: (padded(options[i].n_bytes, alignment), options[i].error))
    hull: list[int] = []
    for i in pts:
        if hull and options[i].error >= options[hull[-1]].error:
            continue  # bigger and no better
        while len(hull) >= 2:
            a, b = options[hull[-2]], options[hull[-1]]
            c = options[i]
            xa, xb, xc = (padded(o.n_bytes, alignment) for o in (a, b, c))
            if (b.error - a.error) * (xc - xa) >= (c.error - a.error) * (xb - xa):
                hull.pop()  # b lies on or above the line a–c
            else:
                break
        hull.append(i)
    return hull


def solve(tensors: list[TensorOptions], budget: int, alignment: int = 32) -> dict[str, int]:
    """Tensor name → index of its chosen option, with Σ padded bytes ≤ `budget` (see the module docstring).
    The caller checks beforehand that the smallest choice fits."""
    size = [[padded(o.n_bytes, alignment) for o in t.options] for t in tensors]
    hulls = [_hull(t.options, alignment) for t in tensors]

    def pick(lam: float) -> list[int]:
        return [min(h, key=lambda i, t=t, s=s: (t.options[i].error + lam * s[i], s[i]))
                for t, h, s in zip(tensors, hulls, size)]

    def total(choice: list[int]) -> int:
        return sum(s[i] for s, i in zip(size, choice))

    if total(pick(0.0)) <= budget:
        choice = pick(0.0)
    else:
        lo, hi = 0.0, 1.0
        while total(pick(hi)) > budget:
            hi *= 4
            if hi > 1e300:
                break
        for _ in range(200):  # bisect in log space between a price that overspends and one that fits
            mid = math.sqrt(lo * hi) if lo > 0 else hi / 1e6
            if total(pick(mid)) > budget:
                lo = mid
            else:
                hi = mid
            if lo > 0 and hi / lo < 1 + 1e-12:
                break
        choice = pick(hi)
    left = budget - total(choice)
    while True:  # greedy fill of what the hull step left
        best, best_gain = None, 0.0
        for k, (t, s) in enumerate(zip(tensors, size)):
            cur = choice[k]
            for i, o in enumerate(t.options):
                extra = s[i] - s[cur]
                if o.error < t.options[cur].error and extra <= left:
                    gain = (t.options[cur].error - o.error) / max(extra, 1)
                    if gain > best_gain:
                        best, best_gain = (k, i), gain
        if best is None:
            break
        k, i = best
        left -= size[k][i] - size[k][choice[k]]
        choice[k] = i
    return {t.name: i for t, i in zip(tensors, choice)}


# ---------------------------------------------------------------------------------------------------------------
# plans


@dataclass
class Plan:
    base: Path
    target: Target
    budget_bytes: int  # what the planned tensors may take (padded), after the header and the fixed tensors
    types: dict[str, str]  # every tensor of the file → its type (the unquantized ones keep theirs)
    overrides: dict[str, str]  # the tensors libllama quantizes → planned type
    file_bytes: int  # the file, header included
    weights_bytes: int  # tensor data
    bits_per_weight: float
    error: float  # Σ of the chosen options' errors
    file_type: str  # the file type the file is labelled with
    imatrix: str | None
    tensors: list[TensorOptions] = field(default_factory=list, repr=False)

    def kv(self) -> dict[str, str]:
        """The metadata written into the file (libllama's kv overrides: strings of at most 127 bytes)."""
        counts: dict[str, int] = {}
        for t in self.overrides.values():
            counts[t] = counts.get(t, 0) + 1
        out = {KEY_TARGET: self.target.describe(),
               KEY_TYPES: ",".join(f"{t}:{n}" for t, n in sorted(counts.items())),
               KEY_PLAN: plan_digest(self.types)}
        if self.imatrix:
            out[KEY_IMATRIX] = self.imatrix[-127:]
        return out


def importance_for(imatrix: Path | None, base: Path) -> dict[str, np.ndarray] | None:
    """The importance values of the imatrix file `imatrix` (checked against `base`), as libllama gets them."""
    if imatrix is None:
        return None
    from ..imatrix.format import check_imatrix_matches, read_imatrix

    data = read_imatrix(imatrix)
    check_imatrix_matches(data, base)
    return data.importance()


def plan_digest(types: dict[str, str]) -> str:
    """sha256 of the sorted `name=TYPE` lines of every tensor of a file: a planned file's KEY_PLAN is the digest
    of its plan, so a file whose tensors are what was planned has KEY_PLAN == plan_digest(its tensor types)."""
    return hashlib.sha256("".join(f"{n}={t}\n" for n, t in sorted(types.items())).encode()).hexdigest()


def _kv_bytes(kv: dict[str, str]) -> int:
    return sum(8 + len(k.encode()) + 4 + 8 + len(v.encode()) for k, v in kv.items())


def plan_mix(base: Path, target: Target, imatrix: dict[str, np.ndarray] | None = None, *,
             imatrix_name: str | None = None, measured: list[TensorOptions] | None = None,
             sample_values: int = SAMPLE_VALUES, threads: int | None = None, progress=None) -> Plan:
    """The per-tensor types of the smallest-damage file of `base` that fits `target`."""
    from ..memory import _output_header_bytes
    from ..memory.shapes import resolve_target

    base = Path(base)
    spec = resolve_target(str(base))
    if spec.header is None:
        raise InvalidArgumentError(f"{base} is not a local GGUF file", hint="a budget mix is planned from a base GGUF")
    alignment = spec.header.alignment
    if measured is None:
        measured = measure(base, imatrix, sample_values=sample_values, threads=threads, progress=progress)
    planned = {t.name for t in measured}
    fixed = [t for t in spec.tensors if t.name not in planned]
    fixed_bytes = sum(padded(tensor_bytes(t.type, t.shape), alignment) for t in fixed)
    # room for the mix's own keys at their longest, so the budget holds whatever the plan's summary says
    kv_room = _kv_bytes({KEY_TARGET: "x" * 40, KEY_TYPES: "x" * 127, KEY_PLAN: "x" * 64,
                         **({KEY_IMATRIX: "x" * 127} if imatrix_name else {})})
    header = padded(_output_header_bytes(spec) + kv_room, alignment)  # an upper bound
    smallest = sum(padded(t.options[0].n_bytes, alignment) for t in measured)
    smallest_weights = sum(t.options[0].n_bytes for t in measured) + sum(tensor_bytes(t.type, t.shape) for t in fixed)
    base_size = base.stat().st_size
    if target.size is not None:
        budget = target.size - header - fixed_bytes
        if target.size >= base_size:
            raise InvalidArgumentError(
                f"--target-size {target.size:,} bytes is not below the base file ({base_size:,} bytes)",
                hint="a budget mix only makes sense below the base file's size; copy the base instead")
        if budget < smallest:
            raise InvalidArgumentError(
                f"--target-size {target.size:,} bytes is below the smallest file the candidate types can make "
                f"({header + fixed_bytes + smallest:,} bytes)",
                hint="give a larger size" + ("" if imatrix else ", or pass --imatrix to allow the IQ types"))
    else:
        n_params = spec.n_params
        weights_budget = int(target.bpw * n_params / 8)
        base_bpw = 8 * sum(tensor_bytes(t.type, t.shape) for t in spec.tensors) / n_params
        if target.bpw >= base_bpw:
            raise InvalidArgumentError(f"--target-bpw {target.bpw:g} is not below the base file's {base_bpw:.2f}",
                                       hint="a budget mix only makes sense below the base file's size")
        if weights_budget < smallest_weights:
            raise InvalidArgumentError(
                f"--target-bpw {target.bpw:g} is below the smallest mix the candidate types can make "
                f"({8 * smallest_weights / n_params:.3f} bpw)",
                hint="give more bits per weight" + ("" if imatrix else ", or pass --imatrix to allow the IQ types"))
        # bpw counts tensor data without padding: plan on unpadded sizes
        budget = weights_budget - sum(tensor_bytes(t.type, t.shape) for t in fixed)
        alignment = 1
    choice = solve(measured, budget, alignment)
    overrides = {t.name: t.options[choice[t.name]].type for t in measured}
    types = {t.name: overrides.get(t.name, t.type.name) for t in spec.tensors}
    weights = sum(tensor_bytes(T[types[t.name]], t.shape) for t in spec.tensors)
    error = sum(t.options[choice[t.name]].error for t in measured)
    by_bytes: dict[str, int] = {}
    for t in spec.tensors:
        by_bytes[types[t.name]] = by_bytes.get(types[t.name], 0) + tensor_bytes(T[types[t.name]], t.shape)
    ftype = next((_FTYPE_OF[T[n]] for n, _ in sorted(by_bytes.items(), key=lambda kv: -kv[1]) if T[n] in _FTYPE_OF),
                 "Q8_0")
    plan = Plan(base, target, budget, types, overrides, 0, weights, round(8 * weights / spec.n_params, 3), error,
                ftype, imatrix_name, measured)
    real_alignment = spec.header.alignment
    header_exact = padded(_output_header_bytes(spec) + _kv_bytes(plan.kv()), real_alignment)
    plan.file_bytes = header_exact + sum(padded(tensor_bytes(T[types[t.name]], t.shape), real_alignment)
                                         for t in spec.tensors)
    return plan


def standard_error(measured: list[TensorOptions], types: dict[str, str]) -> float | None:
    """Σ error of a standard file type's choices (from estimate-memory), where every one was measured."""
    total = 0.0
    for t in measured:
        opt = next((o for o in t.options if o.type == types.get(t.name)), None)
        if opt is None:
            return None
        total += opt.error
    return total


def layer_table(types: dict[str, str]) -> list[dict[str, str]]:
    """One row per layer (the tensors outside the layers first), one column per tensor kind."""
    rows: dict[str, dict[str, str]] = {}
    for name, t in types.items():
        layer = layer_of(name)
        key = "-" if layer is None else str(layer)
        kind = name.split(".", 2)[2] if layer is not None else name
        kind = kind.removesuffix(".weight")
        if kind.endswith(("_norm", ".bias")) or "norm" in kind or kind.endswith("bias") or kind == "rope_freqs":
            continue
        rows.setdefault(key, {"layer": key})[kind] = t
    order = ["layer", "token_embd", "output", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
             "ffn_down"]
    kinds = order + sorted({k for r in rows.values() for k in r} - set(order))
    return [{k: rows[key][k] for k in kinds if k in rows[key]}
            for key in sorted(rows, key=lambda k: -1 if k == "-" else int(k))]


def summary(plan: Plan) -> dict:
    """What `--json` shows of a plan."""
    return {"target": plan.target.describe(), "label": plan.target.label, "file_bytes": plan.file_bytes,
            "weights_bytes": plan.weights_bytes, "bits_per_weight": plan.bits_per_weight, "error": plan.error,
            "file_type": plan.file_type, "imatrix": plan.imatrix, "types": plan.types}
