"""`quantkit imatrix`: llama-imatrix's importance matrix of a GGUF model, in its GGUF imatrix format."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from ..imatrix.calibration import PAIRS
from ..imatrix.collect import DEFAULT_BATCH, DEFAULT_CTX
from ..imatrix.compute import compute_imatrix
from ._options import GGUFPath, Json, NGpuLayers, Threads
from ._output import Bars, command, emit_json, stdout


def register(app: typer.Typer) -> None:
    app.command("imatrix")(run)


@command
def run(
    model: GGUFPath,
    dataset: Annotated[str, typer.Option("--dataset", help=f"Calibrate for scoring on this dataset ({', '.join(PAIRS)}"
                                                           "): its calibration partner is used, never the scored "
                                                           "text.")] = "wikitext-2",
    text_file: Annotated[Optional[Path], typer.Option("--text-file", help="Calibrate on this text file "
                                                                          "instead.")] = None,
    ctx: Annotated[int, typer.Option("--ctx", "-c", min=16, help="Tokens per chunk.")] = DEFAULT_CTX,
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, help="Tokens per decode (n_batch / ctx chunks "
                                                                    "at once).")] = DEFAULT_BATCH,
    chunks: Annotated[Optional[int], typer.Option("--chunks", min=1, help="Use only the first N chunks.")] = None,
    process_output: Annotated[bool, typer.Option("--process-output", help="Collect output.weight too.")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="The imatrix file to write.")] = Path("imatrix.gguf"),
    threads: Threads = None,
    n_gpu_layers: NGpuLayers = "auto",
    json: Json = False,
) -> None:
    """Importance matrix of MODEL.gguf the way llama-imatrix computes it (for --imatrix of convert/quantize)."""
    with _ChunkBar(enabled=not json) as bar:
        result = compute_imatrix(model, output, dataset=None if text_file else dataset, text_file=text_file,
                                 n_ctx=ctx, n_batch=batch, chunks=chunks, process_output=process_output,
                                 threads=threads, n_gpu_layers=n_gpu_layers, progress=bar.update)
    if json:
        emit_json(result)
        return
    stdout.print(f"{result.path}: {result.n_entries} tensors, {result.n_chunks} chunks of {result.chunk_size} tokens "
                 f"of {result.dataset} in {result.seconds:.1f} s ({result.tokens_per_second:.0f} tokens/s)")
    if result.overlap is not None:
        o = result.overlap
        stdout.print(f"overlap with {o.scored}: {100 * o.lines:.2f} % of its lines, {100 * o.ngrams:.2f} % of its "
                     f"{o.ngram}-word n-grams are in the calibration text")


class _ChunkBar(Bars):
    def __init__(self, enabled: bool):
        super().__init__(TextColumn("imatrix"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
                         TimeRemainingColumn(), enabled=enabled)
        self._task = self._progress.add_task("imatrix", total=None)

    def update(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)
