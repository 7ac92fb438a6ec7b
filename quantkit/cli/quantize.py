"""`quantkit quantize BASE.gguf -t Q4_K_M --target-size 4.2G`: a float GGUF to a quant ladder and budget mixes."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._options import (Calibrate, Force, GGUFPath, ImatrixFile, Json, OutDir, SplitMaxSize, SplitMaxTensors, TargetBpw, TargetSize,
                       Threads)
from ._output import ByteProgress, command, emit_json


def register(app: typer.Typer) -> None:
    app.command("quantize")(run)


@command
def run(
    base: GGUFPath,
    types: Annotated[Optional[List[str]], typer.Option(
        "--type", "-t", help="Quant type(s): repeatable or comma-separated, 'all', or 'all-imatrix' (the IQ rungs).")
    ] = None,
    out: OutDir = Path("."),
    imatrix: ImatrixFile = None,
    target_size: TargetSize = None,
    target_bpw: TargetBpw = None,
    force: Force = False,
    threads: Threads = None,
    split_max_size: SplitMaxSize = None,
    split_max_tensors: SplitMaxTensors = None,
    calibrate: Calibrate = None,
    json: Json = False,
) -> None:
    """Quantize an F32/F16/BF16 GGUF (ours or downloaded) with libllama, like llama-quantize."""
    from ..quantize.ladder import quantize_file
    from ..quantize.mixes import targets
    from ..quant_types import parse_size, parse_types
    from .convert import show_files

    wanted = parse_types(types) if types else []
    budgets = targets(target_size, target_bpw)
    max_size = parse_size(split_max_size, "--split-max-size") if split_max_size is not None else None
    with ByteProgress() as progress:
        files = quantize_file(base, out, types=wanted, targets=budgets, imatrix=imatrix, force=force,
                              threads=threads, progress=progress.update,
                              split_max_size=max_size, split_max_tensors=split_max_tensors, calibrate=calibrate)
    if json:
        emit_json({"base": base, "files": files})
        return
    show_files(files)
