"""HF checkpoint → base GGUF (F32/F16/BF16/Q8_0, our own converter on the gguf package) → the quant ladder
(libllama's quantizer). Every file is written under a temporary name and renamed when complete; outputs that
are already complete and valid are kept unless `force`."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InvalidArgumentError, QuantkitError
from ..files import WriteProgress, output_dir, remove_stale_partials
from .checkpoint import Checkpoint, open_checkpoint
from .metadata import write_hparams, write_metadata
from .source import Source, resolve_source
from ..models import ConfigShape
from ..gguf.split import model_files
from .tensors import OUTTYPES, checkpoint_architecture, plan_gguf_tensors
from .vocab import read_hf_vocab
from .writer import write_gguf

log = logging.getLogger(__name__)

__all__ = ["OUTTYPES", "ConvertResult", "OutputFile", "convert", "convert_checkpoint", "output_name",
           "quantize_file", "quantize_ladder", "resolve_imatrix"]


@dataclass
class OutputFile:
    path: Path
    type: str
    n_bytes: int
    seconds: float
    made: bool  # False: an existing complete file was kept
    target: str | None = None  # a budget mix: its budget (`size<=N` or `bpw<=X`)
    tensor_types: dict[str, str] | None = None  # a budget mix: every tensor's type


@dataclass
class ConvertResult:
    source: Path
    name: str
    base: OutputFile
    files: list[OutputFile] = field(default_factory=list)  # base first, then each requested type


def output_name(name: str, qtype: str) -> str:
    return f"{name}-{qtype}.gguf"


def convert(source: str | Path, out_dir: str | Path = ".", *, outtype: str = "auto", types: list[str] | None = None,
            revision: str | None = None, imatrix: Path | None = None, targets: list | None = None,
            force: bool = False, threads: int | None = None, progress: WriteProgress | None = None,
            split_max_size: int | None = None, split_max_tensors: int | None = None) -> ConvertResult:
    """Convert `source` (folder, repo id or size label) to `<Name>-<OUTTYPE>.gguf` in `out_dir`, then quantize it
    to each of `types` (names as `quant_types.parse_types` gives them) and to a budget mix for each of `targets`
    (quantkit.quantize.mixes.Target). With `split_max_size` (bytes of tensor data) or `split_max_tensors`, each file is then
    cut into llama.cpp's shards (split.split_gguf). `threads` encode the base file's changed tensors (default:
    every core this process may run on) and run libllama's quantizer (default: its own, the physical cores)."""
    from ..quant_types import BASE_TYPES

    types = list(types or [])
    _check_types(types, imatrix)
    src = resolve_source(source, revision)
    with output_dir(Path(out_dir)) as out_dir:  # removed again if nothing could be made in it
        remove_stale_partials(out_dir)
        checkpoint = open_checkpoint(src.folder)
        base_type = _outtype(outtype, checkpoint)
        base = _make(out_dir / output_name(src.name, base_type), base_type, force,
                     lambda dest: convert_checkpoint(checkpoint, dest, base_type, name=_display(src), progress=progress,
                                                       threads=threads))
        files = [base]
        for qtype in types:
            if qtype == base_type or qtype not in BASE_TYPES:
                continue
            files.append(_make(out_dir / output_name(src.name, qtype), qtype, force, lambda d, t=qtype:
                               convert_checkpoint(checkpoint, d, t, name=_display(src), progress=progress,
                                                  threads=threads)))
        quants = [t for t in types if t not in BASE_TYPES]
        files += quantize_ladder(base.path, out_dir, src.name, quants, targets=targets, imatrix=imatrix, force=force,
                                 threads=threads, progress=progress)
        files = split_files(files, split_max_size, split_max_tensors)
    return ConvertResult(src.folder, src.name, files[0], files)


def split_files(files: list[OutputFile], max_size: int | None, max_tensors: int | None) -> list[OutputFile]:
    """Each file cut into llama.cpp's shards when a limit is given (the files unchanged otherwise)."""
    if not (max_size or max_tensors):
        return files
    return [_split(f, max_size, max_tensors) for f in files]


def _split(made: OutputFile, max_size: int | None, max_tensors: int | None) -> OutputFile:
    from ..gguf.split import split_gguf

    shards = split_gguf(made.path, max_size, max_tensors)
    return replace(made, path=shards[0], n_bytes=sum(p.stat().st_size for p in shards))


def quantize_ladder(base: Path, out_dir: Path, name: str, types: list[str], *, targets: list | None = None,
                    imatrix: Path | None = None, force: bool = False, threads: int | None = None,
                    progress: WriteProgress | None = None) -> list[OutputFile]:
    """Quantize the float GGUF `base` to `<name>-<TYPE>.gguf` in `out_dir` for each of `types`, and to
    `<name>-MIX-<budget>.gguf` for each budget in `targets`; complete outputs are kept unless `force`."""
    from ..quantize import file as q

    _check_types(types, imatrix)
    imatrix = resolve_imatrix(imatrix, base, threads=threads)
    files = []
    for qtype in types:
        dest = out_dir / output_name(name, qtype)
        if dest.resolve() == Path(base).resolve():
            continue
        files.append(_make(dest, qtype, force, lambda d, t=qtype: q.quantize(
            base, d, t, imatrix=imatrix, threads=threads).n_bytes))
    if targets:
        files += _make_mixes(base, out_dir, name, targets, imatrix, force, threads, progress)
    return files


def quantize_file(base: str | Path, out_dir: str | Path = ".", *, types: list[str] | None = None,
                  targets: list | None = None, imatrix: Path | None = None, force: bool = False,
                  threads: int | None = None, progress: WriteProgress | None = None,
                  split_max_size: int | None = None, split_max_tensors: int | None = None) -> list[OutputFile]:
    """`quantkit quantize`: an F32/F16/BF16 GGUF (ours or downloaded) to `types` and budget mixes for `targets`,
    named `<base name without -F16>-<TYPE>.gguf` in `out_dir`."""
    from ..quantize.file import check_float_base

    base = Path(base)
    types, targets = list(types or []), list(targets or [])
    if not types and not targets:
        raise InvalidArgumentError("nothing to make", hint="give -t TYPE, --target-size SIZE or --target-bpw X")
    _check_types(types, imatrix)
    check_float_base(base)
    with output_dir(Path(out_dir)) as out_dir:  # removed again if nothing could be made in it
        remove_stale_partials(out_dir)
        files = quantize_ladder(base, out_dir, base_name(base), types, targets=targets, imatrix=imatrix,
                                force=force, threads=threads, progress=progress)
        return split_files(files, split_max_size, split_max_tensors)


def base_name(base: Path) -> str:
    """`SmolLM2-F16.gguf` → `SmolLM2`: the name the ladder's files share (output_name adds the type back)."""
    stem = Path(base).stem
    for suffix in ("-F32", "-F16", "-BF16"):
        if stem.upper().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def resolve_imatrix(imatrix: Path | str | None, base: Path, *, threads: int | None = None) -> Path | None:
    """The importance matrix file a ladder or a budget plan of `base` uses: the path given, or for `auto`
    (`auto:DATASET`) one computed once from `base` with DATASET's calibration text (wikitext-2's train split by
    default; python-docs: its calibration part) and cached beside it (imatrix.imatrix_for_base)."""
    spec = str(imatrix) if imatrix is not None else ""
    if spec != "auto" and not spec.startswith("auto:"):
        return imatrix
    from ..imatrix import imatrix_for_base
    from ..imatrix.compute import AUTO_DATASET

    return imatrix_for_base(Path(base), dataset=spec.partition(":")[2] or AUTO_DATASET, threads=threads)


def _make_mixes(base: Path, out_dir: Path, name: str, targets: list, imatrix: Path | None, force: bool,
                threads: int | None, progress: WriteProgress | None) -> list[OutputFile]:
    from ..quantize import mixes
    from ..quantize.file import quantize_mix

    values = mixes.importance_for(imatrix, base)
    imatrix_name = Path(imatrix).name if imatrix is not None else None
    measured = None
    files = []
    for target in targets:
        dest = out_dir / output_name(name, target.label)
        if not force and _is_complete_mix(dest, target, imatrix_name):
            log.info("%s is already complete; kept (use --force to redo it)", dest)
            files.append(OutputFile(dest, target.label, dest.stat().st_size, 0.0, False, target.describe(),
                                    _tensor_types(dest)))
            continue
        start = time.perf_counter()
        if measured is None:  # one measurement serves every budget
            measured = mixes.measure(base, values, threads=threads, progress=progress)
        plan = mixes.plan_mix(base, target, values, imatrix_name=imatrix_name, measured=measured)
        result = quantize_mix(base, dest, plan, imatrix=values, threads=threads)
        files.append(OutputFile(dest, target.label, result.n_bytes, time.perf_counter() - start, True,
                                target.describe(), dict(plan.types)))
    return files


def _tensor_types(path: Path) -> dict[str, str]:
    from ..gguf.reader import read_header

    return {t.name: t.type.name for t in read_header(path).tensors}


def _is_complete_mix(path: Path, target, imatrix_name: str | None) -> bool:
    from ..quantize import mixes
    from ..gguf.reader import read_header

    if not path.is_file():
        return False
    try:
        header = read_header(path)
    except QuantkitError:
        return False
    return (header.get(mixes.KEY_TARGET) == target.describe() and header.get(mixes.KEY_IMATRIX) == imatrix_name
            and header.get(mixes.KEY_PLAN) == mixes.plan_digest({t.name: t.type.name for t in header.tensors}))


def convert_checkpoint(checkpoint: Checkpoint | Path, dest: Path, outtype: str = "BF16", *, name: str | None = None,
                       progress: WriteProgress | None = None, threads: int | None = None) -> int:
    """Write the GGUF of `checkpoint` at `dest` with weights of `outtype` (F32, F16, BF16 or Q8_0); the tensors
    whose bytes change are encoded on `threads` threads (default: every core this process may run on)."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = open_checkpoint(checkpoint)
    ftype = OUTTYPES[outtype]
    arch = checkpoint_architecture(checkpoint).name
    plans = plan_gguf_tensors(checkpoint, ftype)

    def add_keys(writer) -> None:
        write_metadata(writer, checkpoint.folder, name, ftype)
        write_hparams(writer, checkpoint.config, arch)
        read_hf_vocab(checkpoint.folder, ConfigShape.of(checkpoint.config).n_vocab).add_to(writer)

    return write_gguf(Path(dest), arch, plans, add_keys, progress, threads)


def _display(src: Source) -> str | None:
    return src.name if src.repo_id else None  # a local folder's name goes through gguf's name heuristics


def _check_types(types: list[str], imatrix: Path | None) -> None:
    from ..quant_types import is_imatrix_type, needs_imatrix

    if imatrix is None:
        need = [t for t in types if needs_imatrix(t) or is_imatrix_type(t)]
        if need:
            verb = "needs" if len(need) == 1 else "need"
            raise InvalidArgumentError(f"{' and '.join(need)} {verb} an importance matrix",
                                       hint="pass --imatrix FILE, from llama-imatrix or quantkit imatrix")


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
        files = model_files(dest)  # the file, or the shards split from it
        return OutputFile(files[0], qtype, sum(p.stat().st_size for p in files), 0.0, made=False)
    start = time.perf_counter()
    n_bytes = build(dest)
    return OutputFile(dest, qtype, n_bytes, time.perf_counter() - start, made=True)


def is_complete(path: Path, qtype: str) -> bool:
    """A finished, readable GGUF of file type `qtype` (renamed into place only when complete, so a file that
    reads cleanly and has the right type is one we made, or one made just as carefully)."""
    from ..gguf.reader import file_type_name, read_header

    try:
        path = model_files(path)[0]
        if not path.is_file():
            return False
        header = read_header(path)
    except QuantkitError:
        return False
    return file_type_name(header.get("general.file_type")) == qtype

