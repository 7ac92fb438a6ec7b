"""The ladder of quant types, made by libllama's own quantizer (`llama_model_quantize`).

quantkit never reimplements quantization: it fills in libllama's parameters, lets it write to a temporary name
next to the destination, and renames the file into place when libllama reports success. libllama's log is
captured while it runs, so that a failure becomes a typed error carrying libllama's own reason.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, LlamaFileType

from .errors import InputNotFoundError, InvalidArgumentError, NotGGUFError, QuantizeError
from .files import atomic_file

log = logging.getLogger(__name__)

# The usual llama.cpp ladder, smallest first: the types that need no importance matrix.
LADDER: tuple[str, ...] = (
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M",
    "Q5_0", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0",
)
BASE_TYPES = ("F32", "F16", "BF16")

# File types whose quantizer refuses to run without an importance matrix (llama-quant.cpp,
# tensor_requires_imatrix: the IQ1/IQ2 types, IQ3_XXS, and the Q2_K tensors of a Q2_K_S file).
_IMATRIX_TYPES = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"})


def _all_file_types() -> dict[str, LlamaFileType]:
    names = {}
    for ft in LlamaFileType:
        if ft.name == "GUESSED":
            continue
        names[ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")] = ft
    return names


FILE_TYPES: dict[str, LlamaFileType] = _all_file_types()


def file_type(name: str) -> LlamaFileType:
    """`"Q4_K_M"` → `LlamaFileType.MOSTLY_Q4_K_M` (case-insensitive)."""
    key = name.strip().upper()
    try:
        return FILE_TYPES[key]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown quant type {name!r}",
            hint=f"use one of {', '.join((*LADDER, *BASE_TYPES))} (or another llama.cpp file type: "
                 f"{', '.join(n for n in FILE_TYPES if n not in LADDER and n not in BASE_TYPES)}), or 'all'",
        ) from None


def parse_types(values: list[str]) -> list[str]:
    """Repeatable, comma-separated type names in canonical spelling, without duplicates; "all" is the LADDER."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            names = LADDER if part.lower() == "all" else (file_type(part).name.removeprefix("MOSTLY_").removeprefix("ALL_"),)
            out.extend(n for n in names if n not in out)
    if not out:
        raise InvalidArgumentError("no quant type given", hint=f"use one of {', '.join((*LADDER, *BASE_TYPES))}, or 'all'")
    return out


def needs_imatrix(name: str) -> bool:
    """Whether libllama refuses this file type without an importance matrix."""
    file_type(name)
    return name.strip().upper() in _IMATRIX_TYPES


@dataclass
class QuantizeResult:
    path: Path
    type: str
    n_bytes: int  # file size; for a dry run, libllama's total of tensor data (no file is written)
    seconds: float


# ---------------------------------------------------------------------------------------------------------------
# libllama's log


_sinks: list[list[str]] = []
_pending: list[str] = []
_callback = None


def _on_llama_log(level: int, text: bytes, user_data) -> None:
    _pending.append(text.decode("utf-8", errors="replace"))
    joined = "".join(_pending)
    if "\n" not in joined:
        return
    *done, rest = joined.split("\n")
    _pending[:] = [rest] if rest else []
    for line in done:
        log.debug("libllama: %s", line)
        for sink in _sinks:
            sink.append(line)


@contextlib.contextmanager
def capture_llama_log() -> Iterator[list[str]]:
    """Collect libllama's log lines while the block runs (they also go to Python logging at debug level).

    Blocks may nest. llama-cpp-python installs its own log callback at import; it is put back afterwards.
    """
    global _callback
    import llama_cpp
    from llama_cpp import _logger

    if _callback is None:
        _callback = llama_cpp.llama_log_callback(_on_llama_log)
    lines: list[str] = []
    if not _sinks:
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    _sinks.append(lines)
    try:
        yield lines
    finally:
        _sinks.remove(lines)
        if not _sinks:
            if _pending:
                lines.append("".join(_pending))
                _pending.clear()
            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


# ---------------------------------------------------------------------------------------------------------------
# importance matrix (llama.cpp's GGUF imatrix format)


def load_imatrix(path: Path) -> dict[str, np.ndarray]:
    """Per-tensor importance values from a llama-imatrix GGUF file: `<tensor>.in_sum2` divided by
    `<tensor>.counts`, per expert, the way llama-quantize normalises them (1 where a count is zero)."""
    from .gguf_file import open_gguf

    path = Path(path)
    if path.suffix != ".gguf":
        raise NotGGUFError(f"{path} is not a GGUF imatrix",
                           hint="quantkit reads the GGUF imatrix format of current llama-imatrix (--output-format gguf)")
    reader = open_gguf(path)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        if t.tensor_type != GGMLQuantizationType.F32:
            continue
        if t.name.endswith(".in_sum2"):
            sums[t.name.removesuffix(".in_sum2")] = np.asarray(t.data, dtype=np.float32).reshape(-1)
        elif t.name.endswith(".counts"):
            counts[t.name.removesuffix(".counts")] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    if not sums:
        raise NotGGUFError(f"{path} holds no importance matrix (no *.in_sum2 tensors)",
                           hint="pass a file made by llama-imatrix")
    out: dict[str, np.ndarray] = {}
    for name, s in sums.items():
        c = counts.get(name)
        if c is None or c.size == 0 or s.size % c.size:
            raise NotGGUFError(f"{path}: the counts of {name} do not match its sums", hint="make the imatrix again")
        per_expert = s.reshape(c.size, -1)
        safe = np.where(c > 0, c, 1.0)[:, None]
        out[name] = np.where(c[:, None] > 0, per_expert / safe, 1.0).astype(np.float32).reshape(-1)
    return out


def _imatrix_array(data: dict[str, np.ndarray]):
    import llama_cpp

    entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
    keep = []  # the C side only borrows these buffers
    for i, (name, values) in enumerate(data.items()):
        values = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(values)
        entries[i].name = name.encode()
        entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = values.size
    entries[len(data)].name = None  # terminator
    return entries, keep


# ---------------------------------------------------------------------------------------------------------------


def quantize(
    src: Path,
    dst: Path,
    qtype: str,
    *,
    imatrix: Path | None = None,
    threads: int | None = None,
    dry_run: bool = False,
    allow_requantize: bool = False,
) -> QuantizeResult:
    """Quantize the GGUF `src` to `qtype` at `dst` with libllama.

    `dry_run` asks libllama for the per-tensor choices and the total size without writing anything.
    `allow_requantize` lets libllama start from an already quantized file (worse quality; for tests).
    """
    import llama_cpp

    src, dst = Path(src), Path(dst)
    ftype = file_type(qtype)
    name = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    if not src.exists():
        raise InputNotFoundError(f"{src} does not exist")
    if src.is_dir():
        raise NotGGUFError(f"{src} is a folder, not a GGUF file")
    if needs_imatrix(name) and imatrix is None and not dry_run:
        raise InvalidArgumentError(f"{name} needs an importance matrix", hint="pass --imatrix FILE made by llama-imatrix")

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = threads or 0
    params.dry_run = dry_run
    params.allow_requantize = allow_requantize
    keep = None
    if imatrix is not None:
        entries, keep = _imatrix_array(load_imatrix(imatrix))
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(entries)

    start = time.perf_counter()
    if dry_run:
        with capture_llama_log() as lines:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        _check(rc, lines, src, name)
        return QuantizeResult(dst, name, _dry_run_total(lines), time.perf_counter() - start)

    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dst) as tmp:
        log.info("quantizing %s to %s", src.name, name)
        with capture_llama_log() as lines:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        _check(rc, lines, src, name)
    seconds = time.perf_counter() - start
    log.info("%s written in %.1f s", dst, seconds)
    return QuantizeResult(dst, name, dst.stat().st_size, seconds)


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
