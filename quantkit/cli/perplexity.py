"""`quantkit perplexity`: llama-perplexity's numbers for one model or a ladder, with KL-divergence from the base."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..measure.texts import DATASET_NAMES, dataset_path, read_text
from ..files import atomic_file
from ..measure.kld import TOP_K
from ..measure.perplexity import DEFAULT_BATCH, DEFAULT_CTX, Settings, ladder_table, perplexity
from ..runtime import describe_device
from ..memory.layers import remote_summary
from ._options import Json, NGpuLayers, Rpc, Threads
from ._output import Bars, command, emit_json, stdout
from ._rpc import rpc_endpoints


def register(app: typer.Typer) -> None:
    app.command("perplexity")(run)


@command
def run(
    models: Annotated[List[Path], typer.Argument(help="GGUF files; with several, the first is the KL base.",
                                                 show_default=False)],
    dataset: Annotated[str, typer.Option("--dataset", help=f"Text to score: {', '.join(DATASET_NAMES)}.")] = "wikitext-2",
    text_file: Annotated[Optional[Path], typer.Option("--text-file", help="Score this text file instead.")] = None,
    ctx: Annotated[int, typer.Option("--ctx", "-c", min=4, help="Tokens per chunk.")] = DEFAULT_CTX,
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, help="Tokens per decode (n_batch / ctx chunks "
                                                                    "at once).")] = DEFAULT_BATCH,
    chunks: Annotated[Optional[int], typer.Option("--chunks", min=1, help="Score only the first N chunks.")] = None,
    threads: Threads = None,
    n_gpu_layers: NGpuLayers = "auto",
    rpc: Rpc = None,
    kl_base: Annotated[Optional[Path], typer.Option("--kl-base", help="Base model for KL-divergence.")] = None,
    kl_top_k: Annotated[int, typer.Option("--kl-top-k", min=1, help="Base tokens kept per position for KL "
                                                                 "(the rest is one bucket).")] = TOP_K,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the table as CSV.")] = None,
    json: Json = False,
) -> None:
    """Perplexity on wikitext-2 the way llama-perplexity computes it, with KL-divergence for a ladder."""
    endpoints = rpc_endpoints(rpc)
    text = read_text(text_file) if text_file else read_text(dataset_path(dataset))
    settings = Settings(n_ctx=ctx, n_batch=batch, chunks=chunks, threads=threads, n_gpu_layers=n_gpu_layers,
                        kl_top_k=kl_top_k, rpc=endpoints)
    with _ProgressBars(enabled=not json) as bars:
        results = perplexity(models, text, settings, kl_base=kl_base, progress=bars.for_model)
    table = ladder_table(results)
    if csv:
        with atomic_file(csv) as tmp:
            table.to_csv(tmp, index=False)
    if json:
        emit_json({"device": describe_device(threads), "text": str(text_file or dataset), "results": results})
    else:
        _show(table, results, describe_device(threads))


class _ProgressBars(Bars):
    """One bar per model on stderr, with the running PPL."""

    def __init__(self, enabled: bool):
        super().__init__(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("PPL {task.fields[ppl]}"), TimeRemainingColumn(), enabled=enabled)

    def for_model(self, name: str):
        task = self._progress.add_task(name, total=None, ppl="-")

        def update(done: int, total: int, ppl: float) -> None:
            self._progress.update(task, completed=done, total=total, ppl=f"{ppl:.4f}")

        return update


def _show(table, results, device: str) -> None:
    out = Table(title=f"perplexity, ctx {results[0].n_ctx}, {results[0].n_chunks} chunks — {device}")
    for col in ("file", "type", "size", "bpw", "PPL", "ΔPPL %", "mean KLD", "same top %", "tokens/s"):
        out.add_column(col, justify="left" if col in ("file", "type") else "right")
    for row in table.itertuples():
        out.add_row(row.file, row.type or "-", f"{row.size_gib:.3f} GiB", f"{row.bpw:.2f}",
                    f"{row.ppl:.4f} ± {row.ppl_err:.5f}", f"{row.delta_ppl_pct:+.3f}", _opt(row.mean_kld, "{:.6f}"),
                    _opt(row.same_top_pct, "{:.3f}"), f"{row.tokens_per_s:.1f}")
    stdout.print(out)
    where = remote_summary(results[0].placement)
    if where:
        stdout.print(f"placement: {where}", markup=False, highlight=False)
    for r in results:
        if r.kl is not None:
            _show_kl(r)


def _opt(value, fmt: str) -> str:
    return "-" if value is None or value != value else fmt.format(value)


def _show_kl(r) -> None:
    k = r.kl
    stdout.print(f"[bold]{Path(r.path).name}[/] against the base ({k.n_positions} positions, top-{k.top_k} kept):")
    stdout.print(f"  Mean PPL(Q)/PPL(base) ln ratio: {k.ln_ppl_ratio:10.6f} ± {k.ln_ppl_ratio_err:10.6f}")
    stdout.print(f"  Mean    KLD: {k.mean_kld:10.6f} ± {k.mean_kld_err:10.6f}")
    for name, v in k.kld_percentiles.items():
        stdout.print(f"  {name:<7} KLD: {v:10.6f}")
    stdout.print(f"  Mean    Δp: {100 * k.mean_dp:6.3f} ± {100 * k.mean_dp_err:5.3f} %")
    stdout.print(f"  RMS Δp    : {100 * k.rms_dp:6.3f} ± {100 * k.rms_dp_err:5.3f} %")
    stdout.print(f"  Same top p: {100 * k.same_top:6.3f} ± {100 * k.same_top_err:5.3f} %")
