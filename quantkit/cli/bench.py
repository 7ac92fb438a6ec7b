"""`quantkit bench MODEL.gguf [MORE.gguf ...]`: pp512 and tg128 tokens/s, mean ± std, like llama-bench."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..measure.bench import bench
from ..runtime import describe_device
from ._options import (
    Draft,
    DraftMax,
    DraftMin,
    DraftPMin,
    Json,
    NGpuLayers,
    Rpc,
    Spec,
    SpecNgram,
    Threads,
)
from ._output import command, emit_json, stderr, stdout
from ._rpc import rpc_endpoints
from ._spec import speculation_of


def register(app: typer.Typer) -> None:
    app.command("bench")(run)


@command
def run(
    models: Annotated[list[Path], typer.Argument(help="One or more .gguf files (a quant ladder).", show_default=False)],
    n_prompt: Annotated[int, typer.Option("--n-prompt", "-p", help="Prompt tokens of the pp test (0: skip).")] = 512,
    n_gen: Annotated[int, typer.Option("--n-gen", "-n", help="Generated tokens of the tg test (0: skip).")] = 128,
    repetitions: Annotated[int, typer.Option("--repetitions", "-r", help="Runs per test.")] = 5,
    batch: Annotated[int, typer.Option("--batch", "-b", help="Logical batch size (llama-bench: 2048).")] = 2048,
    ubatch: Annotated[int, typer.Option("--ubatch", "-ub", help="Physical batch size (llama-bench: 512).")] = 512,
    threads: Threads = None,
    n_gpu_layers: NGpuLayers = "auto",
    rpc: Rpc = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV on stdout.")] = False,
    json: Json = False,
    spec: Spec = None,
    draft: Draft = None,
    draft_max: DraftMax = 8,
    draft_min: DraftMin = 0,
    draft_p_min: DraftPMin = 0.75,
    spec_ngram: SpecNgram = 4,
) -> None:
    """Prompt-processing and generation speed (tokens/s, mean ± std over runs), measured like llama-bench.
    With --spec or --draft, also greedy generation of a math question's thought through the engine, without
    and with speculative decoding (tg…@engine, tg…+ngram / +draft)."""
    endpoints = rpc_endpoints(rpc)
    speculating = speculation_of(spec, draft, draft_max, draft_min, draft_p_min, spec_ngram)
    quiet = json or csv
    progress = None if quiet or not stderr.is_terminal else (lambda what: stderr.print(f"measuring {what}…",
                                                                                        style="dim", highlight=False))
    results = bench(models, n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions, threads=threads,
                    n_gpu_layers=n_gpu_layers, n_batch=batch, n_ubatch=ubatch, progress=progress,
                    rpc=endpoints)
    if speculating is not None and n_gen > 0:
        results += _speculative_rows(models, speculating, n_gen, repetitions, threads, n_gpu_layers, endpoints,
                                     progress)
    if json:
        emit_json(results)
        return
    import pandas as pd  # here, not at the top: every command's start-up would pay for it

    frame = pd.DataFrame([dataclasses.asdict(r) for r in results]).drop(columns=["samples_tps"])
    if csv:
        frame.to_csv(sys.stdout, index=False, float_format="%.2f")
        return
    stderr.print(describe_device(results[0].threads if results else None), style="dim", highlight=False)
    table = Table()
    for col in ("model", "type", "size", "threads", "ngl", "test", "t/s"):
        table.add_column(col, justify="left" if col in ("model", "type", "test") else "right")
    for row in frame.itertuples():
        table.add_row(row.model, row.file_type or "-", f"{row.size_bytes / 2**20:.1f} MiB", str(row.threads),
                      str(row.n_gpu_layers), row.test, f"{row.mean_tps:.2f} ± {row.std_tps:.2f}")
    stdout.print(table)


def _speculative_rows(models, speculating, n_gen, repetitions, threads, n_gpu_layers, rpc, progress) -> list:
    """tg through the engine on a real prompt, without and with speculation, as bench rows."""
    from ..engine import Engine
    from ..engine.speed import generation_speed
    from ..gguf import reader as gguf_file
    from ..measure.bench import BenchResult

    rows = []
    for path in models:
        for label, spec in ((f"tg{n_gen}@engine", None), (f"tg{n_gen}+{speculating.mode}", speculating)):
            if progress:
                progress(f"{path.name} {label}")
            with Engine.open(path, n_ctx=4096, n_parallel=1, threads=threads, n_gpu_layers=n_gpu_layers, rpc=rpc,
                             speculation=spec) as engine:
                speed = generation_speed(engine, n_gen, repetitions)
                ftype = gguf_file.file_type_name(engine.model.meta_int("general.file_type"))
                if spec is not None:
                    label += f" ({speed.accepted}/{speed.drafted} accepted)"
                rows.append(BenchResult(path.name, ftype, path.stat().st_size, label, speed.tokens,
                                        engine.context.threads, engine.model.layers_on_gpu, speed.mean_tps,
                                        speed.std_tps, speed.samples_tps))
    return rows
