"""`quantkit run RECIPE`: the whole job of a recipe, resumable, with one progress bar and a report at the end."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from ..job import STEPS, run_recipe
from ..job.recipes import load_recipe
from ._options import Force, Json, NGpuLayers, Rpc, Threads
from ._output import Bars, command, emit_json, stderr, stdout
from ._rpc import rpc_endpoints

_STEP_LIST = ", ".join(STEPS)


def register(app: typer.Typer) -> None:
    app.command("run")(run)


@command
def run(
    recipe: Annotated[str, typer.Argument(help="A recipe name (see `quantkit recipes`), size label, or .toml path.",
                                          show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: out/RECIPE).")] = None,
    only: Annotated[Optional[List[str]], typer.Option("--only", help=f"Run only these steps ({_STEP_LIST}); "
                                                                     "repeatable or comma-separated.")] = None,
    skip: Annotated[Optional[List[str]], typer.Option("--skip", help="Leave these steps out.")] = None,
    threads: Threads = None,
    n_gpu_layers: NGpuLayers = "auto",
    rpc: Rpc = None,
    force: Force = False,
    json: Json = False,
) -> None:
    """Make a recipe's quant ladder and measure each rung: perplexity, KLD, speed, memory; then write the report."""
    endpoints = rpc_endpoints(rpc)
    loaded = load_recipe(recipe)
    with _JobBar(enabled=not json) as bar:
        result = run_recipe(loaded, out, only=_names(only), skip=_names(skip), threads=threads,
                            n_gpu_layers=n_gpu_layers, force=force, progress=bar.update, rpc=endpoints)
    if json:
        emit_json(result)
        return
    for s in result.steps:
        if s.status != "skipped":
            stderr.print(f"{s.step:<11} {s.status:<5} {s.seconds:7.1f} s", style="dim", highlight=False)
    if result.chat:
        c = result.chat
        stdout.print(f"\n{c['type']} answers: {c['prompt']}", style="bold", markup=False, highlight=False)
        stdout.print(c["answer"].strip() or "(no answer)", markup=False, highlight=False)
    if "md" in result.report:
        stdout.print(f"\nreport: {result.report['md']}", markup=False, highlight=False)
    if "png" in result.report:
        stdout.print(f"picture: {result.report['png']}", markup=False, highlight=False)
    stderr.print(f"done in {result.seconds:.0f} s", style="dim", highlight=False)


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


class _JobBar(Bars):
    """The one progress bar of a job on stderr: what runs now, and the share of the job done."""

    def __init__(self, enabled: bool):
        super().__init__(TextColumn("{task.description:<24}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                         enabled=enabled)
        self._task = self._progress.add_task("starting", total=None)

    def update(self, label: str, done: float, total: float) -> None:
        self._progress.update(self._task, description=label, completed=done, total=total)
