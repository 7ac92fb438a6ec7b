"""`quantkit convert SOURCE -t Q4_K_M -t Q8_0`: an R1-Distill checkpoint to a base GGUF and a quant ladder."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._options import (Force, ImatrixFile, Json, OutDir, SplitMaxSize, SplitMaxTensors, TargetBpw, TargetSize,
                       Threads)
from ._output import ByteProgress, command, emit_json, stdout


def register(app: typer.Typer) -> None:
    app.command("convert")(run)


@command
def run(
    source: Annotated[str, typer.Argument(help="A checkpoint folder, a Hub repo id, or a size label (1.5B … 70B).",
                                          show_default=False)],
    types: Annotated[Optional[List[str]], typer.Option(
        "--type", "-t", help="Quant type(s) to make from the base file: repeatable or comma-separated, or 'all'.")] = None,
    outtype: Annotated[str, typer.Option("--outtype", help="Base file type: auto (BF16 for a bf16 checkpoint), "
                                                           "F32, F16, BF16 or Q8_0.")] = "auto",
    out: OutDir = Path("."),
    revision: Annotated[Optional[str], typer.Option("--revision", help="Hub branch, tag or commit.")] = None,
    imatrix: ImatrixFile = None,
    target_size: TargetSize = None,
    target_bpw: TargetBpw = None,
    force: Force = False,
    threads: Threads = None,
    split_max_size: SplitMaxSize = None,
    split_max_tensors: SplitMaxTensors = None,
    json: Json = False,
) -> None:
    """Convert an R1-Distill checkpoint (repo id, folder or size label) to GGUF and quantize it."""
    from ..convert import convert
    from ..quantize.mixes import targets
    from ..quant_types import parse_size, parse_types

    wanted = parse_types(types) if types else []
    budgets = targets(target_size, target_bpw)
    max_size = parse_size(split_max_size, "--split-max-size") if split_max_size is not None else None
    with ByteProgress() as progress:
        result = convert(source, out, outtype=outtype, types=wanted, revision=revision, imatrix=imatrix,
                         targets=budgets, force=force, threads=threads, progress=progress.update,
                         split_max_size=max_size, split_max_tensors=split_max_tensors)
    if json:
        emit_json({"source": result.source, "name": result.name, "files": result.files})
        return
    show_files(result.files)


def show_files(files) -> None:
    """One line per file made or kept; a budget mix also gets its per-layer table of types."""
    from ..quantize.mixes import layer_table

    for f in files:
        verb = "made" if f.made else "kept"
        extra = f", {f.target}" if f.target else ""
        stdout.print(f"{verb} {f.path} ({f.type}, {f.n_bytes / 2**20:,.1f} MiB{extra})", markup=False,
                     highlight=False)
        if f.tensor_types:
            print_layer_table(layer_table(f.tensor_types))


def print_layer_table(rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows).fillna("")
    stdout.print(frame.to_string(index=False), markup=False, highlight=False)
