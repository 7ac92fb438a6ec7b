"""Budget-targeted per-tensor mixes (`--target-size` / `--target-bpw`): each tensor's type chosen so that the
file fits the budget with the least damage (damage.py measures it, solve.py chooses); the bytes are still written
by libllama's quantizer, told the plan through its tensor-type overrides (file.py). This module turns a target
into a plan, the plan into the file's metadata, and a plan into the tables the CLI shows.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

from ..errors import InvalidArgumentError
from ..gguf.header import layer_of, padded, tensor_bytes
from ..gguf.reader import GGUFFile, read_gguf
from .damage import SAMPLE_VALUES, TensorOptions, measure
from .solve import solve
from ..quant_types import parse_size


# metadata written into a planned file (GGUF strings of at most 127 bytes: libllama's kv override limit)
KEY_TARGET = "quantize.mix.target"
KEY_TYPES = "quantize.mix.types"
KEY_PLAN = "quantize.mix.plan_sha256"
KEY_IMATRIX = "quantize.mix.imatrix"
KEY_DAMAGE = "quantize.mix.damage"  # "kld:<calibration digest>" for a plan on calibrated errors (calibrate.py)
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
    calibration: str | None = None  # the digest of the KLD calibration the errors were scaled by, if any

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
        if self.calibration:
            out[KEY_DAMAGE] = damage_label(self.calibration)
        return out


def damage_label(calibration: str | None) -> str | None:
    """What KEY_DAMAGE records for a plan calibrated by the calibration of digest `calibration` (None: none)."""
    return f"kld:{calibration}" if calibration else None


def importance_for(imatrix: Path | None, base: Path | GGUFFile) -> dict[str, np.ndarray] | None:
    """The importance values of the imatrix file `imatrix` (checked against `base`, a path or a GGUFFile
    already read), as libllama gets them."""
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


def plan_mix(base: Path | GGUFFile, target: Target, imatrix: dict[str, np.ndarray] | None = None, *,
             imatrix_name: str | None = None, measured: list[TensorOptions] | None = None,
             sample_values: int = SAMPLE_VALUES, threads: int | None = None, progress=None,
             calibration=None) -> Plan:
    """The per-tensor types of the smallest-damage file of `base` (a path, or a GGUFFile already read) that fits
    `target`. With `calibration` (calibrate.Calibration of this base) the errors are first scaled into predicted
    KLD; `measured` is given as damage.measure returned it either way."""
    from ..memory import _output_header_bytes
    from ..memory.shapes import resolve_target

    base = read_gguf(base)
    spec = resolve_target(base)
    alignment = spec.header.alignment
    if measured is None:
        measured = measure(base, imatrix, sample_values=sample_values, threads=threads, progress=progress)
    if calibration is not None:
        from .calibrate import calibrated

        measured = calibrated(measured, calibration)
    planned = {t.name for t in measured}
    fixed = [t for t in spec.tensors if t.name not in planned]
    fixed_bytes = sum(padded(tensor_bytes(t.type, t.shape), alignment) for t in fixed)
    # room for the mix's own keys at their longest, so the budget holds whatever the plan's summary says
    kv_room = _kv_bytes({KEY_TARGET: "x" * 40, KEY_TYPES: "x" * 127, KEY_PLAN: "x" * 64,
                         **({KEY_IMATRIX: "x" * 127} if imatrix_name else {}),
                         **({KEY_DAMAGE: "x" * 40} if calibration is not None else {})})
    header = padded(_output_header_bytes(spec) + kv_room, alignment)  # an upper bound
    smallest = sum(padded(t.options[0].n_bytes, alignment) for t in measured)
    smallest_weights = sum(t.options[0].n_bytes for t in measured) + sum(tensor_bytes(t.type, t.shape) for t in fixed)
    base_size = base.header.file_size or base.path.stat().st_size
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
    plan = Plan(base.path, target, budget, types, overrides, 0, weights, round(8 * weights / spec.n_params, 3), error,
                ftype, imatrix_name, measured, calibration.digest if calibration is not None else None)
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
            "file_type": plan.file_type, "imatrix": plan.imatrix, "calibration": plan.calibration,
            "types": plan.types}
