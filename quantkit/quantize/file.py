"""The ladder of quant types, made by libllama's own quantizer (`llama_model_quantize`).

quantkit never reimplements quantization: it fills in libllama's parameters, lets it write to a temporary name
next to the destination, and renames the file into place when libllama reports success. libllama's log is
captured while it runs, so that a failure becomes a typed error carrying libllama's own reason.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from .. import runtime
from ..errors import InputNotFoundError, InvalidArgumentError, NotGGUFError, QuantizeError
from ..files import atomic_file
from ..gguf.reader import GGUFFile
from ..imatrix.format import Imatrix, check_imatrix_matches, read_imatrix
from ..quant_types import file_type, needs_imatrix

log = logging.getLogger(__name__)

@dataclass
class QuantizeResult:
    path: Path
    type: str
    n_bytes: int  # file size; for a dry run, libllama's total of tensor data (no file is written)
    seconds: float


def quantize(
    src: Path | GGUFFile,
    dst: Path,
    qtype: str,
    *,
    imatrix: Path | Imatrix | None = None,
    threads: int | None = None,
    dry_run: bool = False,
    allow_requantize: bool = False,
) -> QuantizeResult:
    """Quantize the GGUF `src` to `qtype` at `dst` with libllama.

    `src` may be a GGUFFile already read and `imatrix` an Imatrix already read (a ladder reads each once);
    `dry_run` asks libllama for the per-tensor choices and the total size without writing anything.
    `allow_requantize` lets libllama start from an already quantized file (worse quality; for tests).
    """
    model = src
    src, dst = (src.path if isinstance(src, GGUFFile) else Path(src)), Path(dst)
    ftype = file_type(qtype)
    name = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    if not src.exists():
        raise InputNotFoundError(f"{src} does not exist")
    if src.is_dir():
        raise NotGGUFError(f"{src} is a folder, not a GGUF file")
    if needs_imatrix(name) and imatrix is None and not dry_run:
        raise InvalidArgumentError(f"{name} needs an importance matrix", hint="pass --imatrix FILE made by llama-imatrix")
    importance = None
    if imatrix is not None:
        data = imatrix if isinstance(imatrix, Imatrix) else read_imatrix(imatrix)
        check_imatrix_matches(data, model)
        importance = data.importance()
    options = dict(threads=threads, dry_run=dry_run, allow_requantize=allow_requantize, imatrix=importance)

    start = time.perf_counter()
    if dry_run:
        rc, lines = runtime.model_quantize(src, dst, int(ftype), **options)
        _check(rc, lines, src, name)
        return QuantizeResult(dst, name, _dry_run_total(lines), time.perf_counter() - start)

    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dst) as tmp:
        log.info("quantizing %s to %s", src.name, name)
        rc, lines = runtime.model_quantize(src, tmp, int(ftype), **options)
        _check(rc, lines, src, name)
    seconds = time.perf_counter() - start
    log.info("%s written in %.1f s", dst, seconds)
    return QuantizeResult(dst, name, dst.stat().st_size, seconds)


def check_float_base(base: Path | GGUFFile) -> None:
    """Refuse, before any work, a base whose weights are already quantized (libllama would refuse later)."""
    from ..gguf.reader import file_type_name, read_gguf

    base = read_gguf(base)
    header, path = base.header, base.path
    floats = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
    quantized = next((t for t in header.tensors if t.type not in floats), None)
    if quantized is not None:
        kind = file_type_name(header.get("general.file_type")) or quantized.type.name
        raise InvalidArgumentError(f"{Path(path).name} is not a float GGUF ({kind}; {quantized.name} is "
                                   f"{quantized.type.name})",
                                   hint="quantize from an F16, BF16 or F32 GGUF (quantkit convert --outtype F16)")


def quantize_mix(src: Path, dst: Path, plan, *, imatrix: dict[str, np.ndarray] | None = None,
                 threads: int | None = None) -> QuantizeResult:
    """Write the budget mix `plan` (quantkit.quantize.mixes.Plan) of `src` at `dst`: libllama quantizes, every planned
    tensor named by an anchored tensor-type override, the plan's summary in the file's metadata. The written
    file's tensor types are checked against the plan before it is renamed into place."""
    from ..gguf.reader import read_header

    src, dst = Path(src), Path(dst)
    tensor_types = {name: int(GGMLQuantizationType[t]) for name, t in plan.overrides.items()}
    options = dict(threads=threads, imatrix=imatrix, tensor_types=tensor_types, metadata=plan.kv())
    start = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    label = plan.target.label
    with atomic_file(dst) as tmp:
        log.info("quantizing %s to %s", src.name, label)
        rc, lines = runtime.model_quantize(src, tmp, int(file_type(plan.file_type)), **options)
        _check(rc, lines, src, label)
        written = {t.name: t.type.name for t in read_header(tmp).tensors}
        if written != plan.types:
            first = next(n for n in plan.types if written.get(n) != plan.types[n])
            raise QuantizeError(f"libllama wrote {first} as {written.get(first)}, not the planned {plan.types[first]}",
                                hint="report this: the plan and libllama's rules disagree")
    return QuantizeResult(dst, label, dst.stat().st_size, time.perf_counter() - start)


def _check(rc: int, lines: list[str], src: Path, name: str) -> None:
    if rc == 0:
        return
    reason = next((ln.split("failed to quantize:", 1)[1].strip() for ln in reversed(lines)
                   if "failed to quantize:" in ln), "libllama gave no reason")
    hint = None
    if "requantizing" in reason:
        hint = "start from an F16, BF16 or F32 GGUF (quantkit convert --type F16)"
    elif "imatrix" in reason:
        hint = "pass --imatrix FILE made by llama-imatrix"
    raise QuantizeError(f"libllama could not quantize {src.name} to {name}: {reason}", hint=hint)


def _dry_run_total(lines: list[str]) -> int:
    """libllama prints the dry-run total in MiB with two decimals; good to about 5 KiB."""
    import re

    for line in reversed(lines):
        m = re.search(r"quant size\s*=\s*([\d.]+) MiB", line)
        if m:
            return int(float(m.group(1)) * 2**20)
    return 0
