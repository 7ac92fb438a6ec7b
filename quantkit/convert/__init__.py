"""HF checkpoint → base GGUF (F32/F16/BF16/Q8_0, our own converter on the gguf package) → the quant ladder
(libllama's quantizer). Every file is written under a temporary name and renamed when complete; outputs that
are already complete and valid are kept unless `force`."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidArgumentError, QuantkitError
from ..files import WriteProgress, output_dir, remove_stale_partials
from .checkpoint import Checkpoint, open_checkpoint
from .metadata import write_hparams, write_metadata
from .source import Source, resolve_source
from ..models import ConfigShape
from .tensors import OUTTYPES, checkpoint_architecture, plan_gguf_tensors
from .vocab import read_hf_vocab
from .writer import write_gguf

log = logging.getLogger(__name__)

__all__ = ["OUTTYPES", "ConvertResult", "OutputFile", "convert", "convert_checkpoint", "output_name"]


@dataclass
class OutputFile:
    path: Path
    type: str
    n_bytes: int
    seconds: float
    made: bool  # False: an existing complete file was kept


@dataclass
class ConvertResult:
    source: Path
    name: str
    base: OutputFile
    files: list[OutputFile] = field(default_factory=list)  # base first, then each requested type


def output_name(name: str, qtype: str) -> str:
    return f"{name}-{qtype}.gguf"


def convert(source: str | Path, out_dir: str | Path = ".", *, outtype: str = "auto", types: list[str] | None = None,
            revision: str | None = None, imatrix: Path | None = None, force: bool = False,
            threads: int | None = None, progress: WriteProgress | None = None) -> ConvertResult:
    """Convert `source` (folder, repo id or size label) to `<Name>-<OUTTYPE>.gguf` in `out_dir`, then quantize it
    to each of `types` (names as `quant_types.parse_types` gives them)."""
    from .. import quantize as q
    from ..quant_types import BASE_TYPES

    types = list(types or [])
    _check_types(types, imatrix)
    src = resolve_source(source, revision)
    with output_dir(Path(out_dir)) as out_dir:  # removed again if nothing could be made in it
        remove_stale_partials(out_dir)
        checkpoint = open_checkpoint(src.folder)
        base_type = _outtype(outtype, checkpoint)
        base = _make(out_dir / output_name(src.name, base_type), base_type, force,
                     lambda dest: convert_checkpoint(checkpoint, dest, base_type, name=_display(src), progress=progress))
        files = [base]
        for qtype in types:
            if qtype == base_type:
                continue
            dest = out_dir / output_name(src.name, qtype)
            if qtype in BASE_TYPES:
                made = _make(dest, qtype, force, lambda d, t=qtype: convert_checkpoint(
                    checkpoint, d, t, name=_display(src), progress=progress))
            else:
                made = _make(dest, qtype, force, lambda d, t=qtype: q.quantize(
                    base.path, d, t, imatrix=imatrix, threads=threads).n_bytes)
            files.append(made)
    return ConvertResult(src.folder, src.name, base, files)


def convert_checkpoint(checkpoint: Checkpoint | Path, dest: Path, outtype: str = "BF16", *, name: str | None = None,
                       progress: WriteProgress | None = None) -> int:
    """Write the GGUF of `checkpoint` at `dest` with weights of `outtype` (F32, F16, BF16 or Q8_0)."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = open_checkpoint(checkpoint)
    ftype = OUTTYPES[outtype]
    arch = checkpoint_architecture(checkpoint).name
    plans = plan_gguf_tensors(checkpoint, ftype)

    def add_keys(writer) -> None:
        write_metadata(writer, checkpoint.folder, name, ftype)
        write_hparams(writer, checkpoint.config, arch)
        read_hf_vocab(checkpoint.folder, ConfigShape.of(checkpoint.config).n_vocab).add_to(writer)

    return write_gguf(Path(dest), arch, plans, add_keys, progress)


def _display(src: Source) -> str | None:
    return src.name if src.repo_id else None  # a local folder's name goes through gguf's name heuristics


def _check_types(types: list[str], imatrix: Path | None) -> None:
    from ..quant_types import needs_imatrix

    if imatrix is None:
        need = [t for t in types if needs_imatrix(t)]
        if need:
            raise InvalidArgumentError(f"{', '.join(need)} need(s) an importance matrix",
                                       hint="pass --imatrix FILE made by llama-imatrix")


def _outtype(outtype: str, checkpoint: Checkpoint) -> str:
    key = outtype.strip().upper()
    if key == "AUTO":  # like llama.cpp's auto: keep bf16 as bf16, everything else to f16
        first = next(iter(checkpoint.tensors.values()), None)
        return "BF16" if first is not None and first.dtype == "BF16" else "F16"
    if key not in OUTTYPES:
        raise InvalidArgumentError(f"unknown --outtype {outtype!r}", hint=f"use auto, {', '.join(OUTTYPES)}")
    return key


def _make(dest: Path, qtype: str, force: bool, build) -> OutputFile:
    if not force and is_complete(dest, qtype):
        log.info("%s is already complete; kept (use --force to redo it)", dest)
        return OutputFile(dest, qtype, dest.stat().st_size, 0.0, made=False)
    start = time.perf_counter()
    n_bytes = build(dest)
    return OutputFile(dest, qtype, n_bytes, time.perf_counter() - start, made=True)


def is_complete(path: Path, qtype: str) -> bool:
    """A finished, readable GGUF of file type `qtype` (renamed into place only when complete, so a file that
    reads cleanly and has the right type is one we made, or one made just as carefully)."""
    from ..gguf_file import file_type_name, read_header

    if not path.is_file():
        return False
    try:
        header = read_header(path)
    except QuantkitError:
        return False
    return file_type_name(header.get("general.file_type")) == qtype

