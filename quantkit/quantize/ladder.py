"""A float GGUF to a ladder of quantized files: each named type through libllama's quantizer (file.py), each budget
through a planned mix (mixes.py). Every file is written under a temporary name and renamed when complete; outputs
that are already complete and valid are kept unless `force`. `convert -t` and `quantkit quantize` both end here."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InvalidArgumentError, QuantkitError
from ..files import WriteProgress, output_dir, remove_stale_partials
from ..gguf.reader import GGUFFile, read_gguf
from ..gguf.shards import find_shards

log = logging.getLogger(__name__)

__all__ = ["OutputFile", "base_name", "check_types", "complete_output", "is_complete", "make_output", "output_name",
           "quantize_file", "quantize_ladder", "resolve_imatrix", "split_files"]


@dataclass
class OutputFile:
    path: Path
    type: str
    n_bytes: int
    seconds: float
    made: bool  # False: an existing complete file was kept
    target: str | None = None  # a budget mix: its budget (`size<=N` or `bpw<=X`)
    tensor_types: dict[str, str] | None = None  # a budget mix: every tensor's type


def output_name(name: str, qtype: str) -> str:
    return f"{name}-{qtype}.gguf"


def split_files(files: list[OutputFile], max_size: int | None, max_tensors: int | None) -> list[OutputFile]:
    """Each file cut into llama.cpp's shards when a limit is given (the files unchanged otherwise)."""
    if not (max_size or max_tensors):
        return files
    return [_split(f, max_size, max_tensors) for f in files]


def _split(made: OutputFile, max_size: int | None, max_tensors: int | None) -> OutputFile:
    from ..gguf.split import split_gguf

    shards = split_gguf(made.path, max_size, max_tensors)
    return replace(made, path=shards[0], n_bytes=sum(p.stat().st_size for p in shards))


def quantize_ladder(base: Path | GGUFFile, out_dir: Path, name: str, types: list[str], *,
                    targets: list | None = None, imatrix: Path | None = None, force: bool = False,
                    threads: int | None = None, progress: WriteProgress | None = None,
                    calibrate: str | None = None) -> list[OutputFile]:
    """Quantize the float GGUF `base` (a path, or a GGUFFile already read) to `<name>-<TYPE>.gguf` in `out_dir`
    for each of `types`, and to `<name>-MIX-<budget>.gguf` for each budget in `targets`; complete outputs are
    kept unless `force`. The base's header and the imatrix are read once, here, and handed to every rung.
    `calibrate` (a scoring dataset's name): plan the mixes on errors calibrated against KLD on its calibration
    text (calibrate.py; cached)."""
    from . import file as q
    from ..imatrix.format import check_imatrix_matches, read_imatrix

    check_types(types, imatrix)
    if not types and not targets:
        return []  # nothing to read the base for (convert with only float types)
    base = read_gguf(base)
    imatrix = resolve_imatrix(imatrix, base.path, threads=threads)
    data = None
    if imatrix is not None:
        data = read_imatrix(imatrix)
        check_imatrix_matches(data, base)  # before any work
    files = []
    for qtype in types:
        dest = out_dir / output_name(name, qtype)
        if dest.resolve() == base.path.resolve():
            continue
        files.append(make_output(dest, qtype, force, lambda d, t=qtype: q.quantize(
            base, d, t, imatrix=data, threads=threads).n_bytes))
    if targets:
        imatrix_name = Path(imatrix).name if imatrix is not None else None
        files += _make_mixes(base, out_dir, name, targets, data, imatrix_name, force, threads, progress, calibrate)
    return files


def quantize_file(base: str | Path, out_dir: str | Path = ".", *, types: list[str] | None = None,
                  targets: list | None = None, imatrix: Path | None = None, force: bool = False,
                  threads: int | None = None, progress: WriteProgress | None = None,
                  split_max_size: int | None = None, split_max_tensors: int | None = None,
                  calibrate: str | None = None) -> list[OutputFile]:
    """`quantkit quantize`: an F32/F16/BF16 GGUF (ours or downloaded) to `types` and budget mixes for `targets`,
    named `<base name without -F16>-<TYPE>.gguf` in `out_dir` (`calibrate`: see quantize_ladder)."""
    from .file import check_float_base

    types, targets = list(types or []), list(targets or [])
    if not types and not targets:
        raise InvalidArgumentError("nothing to make", hint="give -t TYPE, --target-size SIZE or --target-bpw X")
    if calibrate is not None:
        from .calibrate import check_dataset

        check_dataset(calibrate)
    check_types(types, imatrix)
    base = read_gguf(base)  # the one read of the base's header: everything below is handed it
    check_float_base(base)
    with output_dir(Path(out_dir)) as out_dir:  # removed again if nothing could be made in it
        remove_stale_partials(out_dir)
        files = quantize_ladder(base, out_dir, base_name(base.path), types, targets=targets, imatrix=imatrix,
                                force=force, threads=threads, progress=progress, calibrate=calibrate)
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


def _make_mixes(base: GGUFFile, out_dir: Path, name: str, targets: list, imatrix, imatrix_name: str | None,
                force: bool, threads: int | None, progress: WriteProgress | None,
                calibrate: str | None = None) -> list[OutputFile]:
    from . import mixes
    from .damage import measure
    from .file import quantize_mix

    values = imatrix.importance() if imatrix is not None else None  # checked against the base by the ladder
    measured = calibration = None
    files = []
    for target in targets:
        dest = out_dir / output_name(name, target.label)
        kept = None if force else _complete_mix(dest, target, imatrix_name, calibrate is not None)
        if kept is not None:
            log.info("%s is already complete; kept (use --force to redo it)", dest)
            files.append(OutputFile(dest, target.label, dest.stat().st_size, 0.0, False, target.describe(),
                                    {t.name: t.type.name for t in kept.tensors}))
            continue
        start = time.perf_counter()
        if measured is None:  # one measurement (and calibration) serves every budget
            measured = measure(base, values, threads=threads, progress=progress)
            if calibrate is not None:
                from .calibrate import calibrate_on

                calibration = calibrate_on(base, measured, values, calibrate, threads=threads, progress=progress)
        plan = mixes.plan_mix(base, target, values, imatrix_name=imatrix_name, measured=measured,
                              calibration=calibration)
        result = quantize_mix(base.path, dest, plan, imatrix=values, threads=threads)
        files.append(OutputFile(dest, target.label, result.n_bytes, time.perf_counter() - start, True,
                                target.describe(), dict(plan.types)))
    return files


def _complete_mix(path: Path, target, imatrix_name: str | None, calibrated: bool = False):
    """The header of the finished mix for `target` at `path`, or None when there is none to keep (a mix planned
    with a KLD calibration is kept only when one is asked for again, and one planned without only without)."""
    from . import mixes
    from ..gguf.reader import read_header

    if not path.is_file():
        return None
    try:
        header = read_header(path)
    except QuantkitError:
        return None
    complete = (header.get(mixes.KEY_TARGET) == target.describe() and header.get(mixes.KEY_IMATRIX) == imatrix_name
                and (header.get(mixes.KEY_DAMAGE) is not None) == calibrated
                and header.get(mixes.KEY_PLAN) == mixes.plan_digest({t.name: t.type.name for t in header.tensors}))
    return header if complete else None


def check_types(types: list[str], imatrix: Path | None) -> None:
    from ..quant_types import is_imatrix_type, needs_imatrix

    if imatrix is None:
        need = [t for t in types if needs_imatrix(t) or is_imatrix_type(t)]
        if need:
            verb = "needs" if len(need) == 1 else "need"
            raise InvalidArgumentError(f"{' and '.join(need)} {verb} an importance matrix",
                                       hint="pass --imatrix FILE, from llama-imatrix or quantkit imatrix")


def make_output(dest: Path, qtype: str, force: bool, build) -> OutputFile:
    kept = None if force else complete_output(dest, qtype)
    if kept is not None:
        log.info("%s is already complete; kept (use --force to redo it)", dest)
        files = kept.shards  # the file, or the shards split from it
        return OutputFile(files[0], qtype, sum(p.stat().st_size for p in files), 0.0, made=False)
    start = time.perf_counter()
    n_bytes = build(dest)
    return OutputFile(dest, qtype, n_bytes, time.perf_counter() - start, made=True)


def is_complete(path: Path, qtype: str) -> bool:
    """A finished, readable GGUF of file type `qtype` (renamed into place only when complete, so a file that
    reads cleanly and has the right type is one we made, or one made just as carefully)."""
    return complete_output(path, qtype) is not None


def complete_output(path: Path, qtype: str) -> GGUFFile | None:
    """The finished GGUF of file type `qtype` made under the name `path` (the file, or the shards split from
    it), read; None when there is none."""
    from ..gguf.reader import file_type_name

    path = Path(path)
    if not path.is_file():
        shards = find_shards(path)
        if shards is None:
            return None
        path = shards[0]
    try:
        made = read_gguf(path)
    except QuantkitError:
        return None
    return made if file_type_name(made.header.get("general.file_type")) == qtype else None
