"""HF checkpoint → base GGUF (F32/F16/BF16/Q8_0, our own converter on the gguf package) → the quant ladder
(quantize/ladder.py, libllama's quantizer). Every file is written under a temporary name and renamed when
complete; outputs that are already complete and valid are kept unless `force`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidArgumentError
from ..files import WriteProgress, output_dir, remove_stale_partials
from ..models import ConfigShape
from ..quantize.ladder import OutputFile, check_types, make_output, output_name, quantize_ladder, split_files
from .checkpoint import Checkpoint, open_checkpoint
from .metadata import write_hparams, write_metadata
from .source import Source, resolve_source
from .tensors import OUTTYPES, checkpoint_architecture, plan_gguf_tensors
from .vocab import read_hf_vocab
from .writer import write_gguf

log = logging.getLogger(__name__)

__all__ = ["OUTTYPES", "ConvertResult", "convert", "convert_checkpoint"]


@dataclass
class ConvertResult:
    source: Path
    name: str
    base: OutputFile
    files: list[OutputFile] = field(default_factory=list)  # base first, then each requested type


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
    check_types(types, imatrix)
    src = resolve_source(source, revision)
    with output_dir(Path(out_dir)) as out_dir:  # removed again if nothing could be made in it
        remove_stale_partials(out_dir)
        checkpoint = open_checkpoint(src.folder)
        base_type = _outtype(outtype, checkpoint)
        base = make_output(out_dir / output_name(src.name, base_type), base_type, force,
                     lambda dest: convert_checkpoint(checkpoint, dest, base_type, name=_display(src), progress=progress,
                                                       threads=threads))
        files = [base]
        for qtype in types:
            if qtype == base_type or qtype not in BASE_TYPES:
                continue
            files.append(make_output(out_dir / output_name(src.name, qtype), qtype, force, lambda d, t=qtype:
                               convert_checkpoint(checkpoint, d, t, name=_display(src), progress=progress,
                                                  threads=threads)))
        quants = [t for t in types if t not in BASE_TYPES]
        files += quantize_ladder(base.path, out_dir, src.name, quants, targets=targets, imatrix=imatrix, force=force,
                                 threads=threads, progress=progress)
        files = split_files(files, split_max_size, split_max_tensors)
    return ConvertResult(src.folder, src.name, files[0], files)


def convert_checkpoint(checkpoint: Checkpoint | Path, dest: Path, outtype: str = "BF16", *, name: str | None = None,
                       progress: WriteProgress | None = None, threads: int | None = None) -> int:
    """Write the GGUF of `checkpoint` at `dest` with weights of `outtype` (F32, F16, BF16 or Q8_0); the tensors
    whose bytes change are encoded on `threads` threads (default: every core this process may run on)."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = open_checkpoint(checkpoint)
    ftype = OUTTYPES[outtype]
    arch = checkpoint_architecture(checkpoint).name
    plans = plan_gguf_tensors(checkpoint, ftype)
    vocab = read_hf_vocab(checkpoint.folder, ConfigShape.of(checkpoint.config).n_vocab)  # refused before any write

    def add_keys(writer) -> None:
        write_metadata(writer, checkpoint.folder, name, ftype)
        write_hparams(writer, checkpoint.config, arch)
        vocab.add_to(writer)

    return write_gguf(Path(dest), arch, plans, add_keys, progress, threads, check=lambda tmp: check_vocabulary(tmp, dest))


def check_vocabulary(path: Path, dest: Path) -> None:
    """libllama reads the vocabulary of the file written at `path` (its pre-tokenizer, tokens, merges and special
    ids) — or the file never becomes `dest`: every later load would fail the same way."""
    from ..errors import RuntimeLoadError
    from ..runtime import load_vocabulary

    try:
        with load_vocabulary(path, validate=False):
            pass
    except RuntimeLoadError as e:
        reason = e.message.split(str(path), 1)[-1]  # ": unknown pre-tokenizer type: …" (the path is a temporary's)
        raise RuntimeLoadError(f"llama.cpp refuses the vocabulary written for {Path(dest).name}{reason}; the file was "
                               "not kept", hint="report it, with the checkpoint's tokenizer files") from None


def _display(src: Source) -> str | None:
    return src.name if src.repo_id else None  # a local folder's name goes through gguf's name heuristics


def _outtype(outtype: str, checkpoint: Checkpoint) -> str:
    key = outtype.strip().upper()
    if key == "AUTO":  # like llama.cpp's auto: keep bf16 as bf16, everything else to f16
        first = next(iter(checkpoint.tensors.values()), None)
        return "BF16" if first is not None and first.dtype == "BF16" else "F16"
    if key not in OUTTYPES:
        raise InvalidArgumentError(f"unknown --outtype {outtype!r}", hint=f"use auto, {', '.join(OUTTYPES)}")
    return key
