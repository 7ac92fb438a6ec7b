"""`quantkit eval`: what a quant does to reasoning — pass@1 per rung with 95 % intervals and the paired difference
from the base, on the engine or against any OpenAI-compatible endpoint."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import InvalidArgumentError
from ..eval.runner import Protocol, eval_table, evaluate_budgets
from ..eval.tasks import TASK_NAMES, load_task, read_task_file
from ..files import atomic_file
from ..engine.thinking import BUDGET_MESSAGE
from ._options import Ctx, Json, LoopGuard, LoopGuardMode, NGpuLayers, ReasoningBudgetMessage, Rpc
from ._options import Draft, DraftMax, DraftMin, DraftPMin, Spec, SpecNgram, Threads
from ._output import Bars, command, emit_json, stdout
from ._rpc import rpc_endpoints
from ._spec import speculation_of


def register(app: typer.Typer) -> None:
    app.command("eval")(run)


@command
def run(
    models: Annotated[List[str], typer.Argument(help="GGUF files (the first is the base); with --endpoint, model "
                                                     "names on that server.", show_default=False)],
    task: Annotated[str, typer.Option("--task", help=f"One of: {', '.join(TASK_NAMES)}.")] = "arith",
    task_file: Annotated[Optional[Path], typer.Option("--task-file", help="Your own problems: .jsonl, .csv or "
                                                                          ".parquet.")] = None,
    problem_column: Annotated[str, typer.Option("--problem-column",
                                                help="The task file's problem column.")] = "problem",
    answer_column: Annotated[str, typer.Option("--answer-column", help="The task file's answer column.")] = "answer",
    samples: Annotated[int, typer.Option("--samples", "-k", help="Samples per problem (pass@1 is their mean).")] = 1,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N problems.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Token budget per answer (capped by the "
                                                                 "context).")] = Protocol.max_tokens,
    temperature: Annotated[float, typer.Option("--temperature", help="R1: 0.6.")] = Protocol.temperature,
    top_p: Annotated[float, typer.Option("--top-p", help="R1: 0.95.")] = Protocol.top_p,
    top_k: Annotated[int, typer.Option("--top-k", help="As llama.cpp and Ollama (0: all).")] = Protocol.top_k,
    seed: Annotated[int, typer.Option("--seed", help="Seeds of the samples derive from it.")] = Protocol.seed,
    reasoning_budget: Annotated[Optional[str], typer.Option(
        "--reasoning-budget", help="Most thought tokens: then the closing message and </think> are forced and the "
                                   "answer follows (0: an empty thought). Several, comma-separated (256,1024,4096): "
                                   "each budget evaluated, one samples file each, a larger budget's samples that "
                                   "ended before a smaller one reused for it. Default: no limit.")] = None,
    reasoning_budget_message: ReasoningBudgetMessage = BUDGET_MESSAGE,
    loop_guard: LoopGuard = LoopGuardMode.off,
    parallel: Annotated[int, typer.Option("--parallel", "-np", min=1, help="Sequences at once on the engine, or "
                                                                           "requests at once to --endpoint.")] = 4,
    ctx: Ctx = 8192,
    threads: Threads = None,
    n_gpu_layers: NGpuLayers = "auto",
    rpc: Rpc = None,
    spec: Spec = None,
    draft: Draft = None,
    draft_max: DraftMax = 8,
    draft_min: DraftMin = 0,
    draft_p_min: DraftPMin = 0.75,
    spec_ngram: SpecNgram = 4,
    endpoint: Annotated[Optional[str], typer.Option("--endpoint", help="An OpenAI-compatible server's URL "
                                                                       "(quantkit serve, llama-server, vLLM, Ollama).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="The endpoint's key (default: "
                                                                     "$QUANTKIT_API_KEY).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the samples files (a re-run resumes from "
                                                          "them).")] = Path("eval"),
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the table as CSV.")] = None,
    json: Json = False,
) -> None:
    """Reasoning accuracy per quant: pass@1 ± its 95 % interval, and each rung against the base."""
    endpoints = rpc_endpoints(rpc)
    speculating = speculation_of(spec, draft, draft_max, draft_min, draft_p_min, spec_ngram)
    if speculating is not None and endpoint is not None:
        raise InvalidArgumentError("--spec and --draft speed up the engine in this process, not an --endpoint",
                                   hint="start the server with them instead (quantkit serve --draft …)")
    if task_file is not None:
        problems, task = read_task_file(task_file, problem_column, answer_column), task_file.stem
    else:
        problems = load_task(task)
    budgets = parse_budgets(reasoning_budget)
    protocol = Protocol(samples, limit, max_tokens, temperature, top_p, top_k, seed, budgets[0],
                        reasoning_budget_message, loop_guard.value)
    if not 0 < top_p <= 1 or temperature < 0 or top_k < 0:
        raise InvalidArgumentError("--temperature must be ≥ 0, --top-p in (0, 1] and --top-k ≥ 0")
    with _Bars(enabled=not json) as bars:
        results = evaluate_budgets(models, problems, task, budgets, protocol, out_dir=out, endpoint=endpoint,
                                   api_key=api_key or os.environ.get("QUANTKIT_API_KEY"), parallel=parallel,
                                   n_ctx=ctx or 8192, n_gpu_layers=n_gpu_layers, threads=threads,
                                   progress=bars.update, rpc=endpoints, speculation=speculating)
    rows = [row for result in results for row in eval_table(result)]
    if len(results) > 1:  # the settings every budget shares; each row says its own budget
        protocol = {**asdict(protocol), "reasoning_budget": [r.protocol.reasoning_budget for r in results]}
    if csv:
        import pandas as pd

        with atomic_file(csv) as tmp:
            pd.DataFrame([{k: v for k, v in r.items() if k != "verdicts"} for r in rows]).to_csv(tmp, index=False)
    if json:
        emit_json({"task": task, "problems": results[0].problems, "protocol": protocol, "models": rows})
    else:
        _show(task, results[0].problems, results[0].protocol, rows, several=len(results) > 1)


def parse_budgets(text: str | None) -> list[int | None]:
    """`--reasoning-budget`: nothing (no limit), N, or N,N,… (each budget evaluated)."""
    if text is None:
        return [None]
    budgets = []
    for part in text.split(","):
        try:
            budgets.append(int(part.strip()))
        except ValueError:
            raise InvalidArgumentError(f"--reasoning-budget takes thought tokens, N or N,N,…, not {text!r}",
                                       hint="e.g. --reasoning-budget 256,1024,4096") from None
    return budgets


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _show(task: str, n_problems: int, protocol: Protocol, rows: list[dict], several: bool = False) -> None:
    controls = f", loop guard {protocol.loop_guard}" if several else _thought_controls(protocol)
    stdout.print(f"{task}: {n_problems} problems × {protocol.samples} samples · temperature {protocol.temperature}, "
                 f"top-p {protocol.top_p}, top-k {protocol.top_k}, max {protocol.max_tokens} tokens, seed "
                 f"{protocol.seed}" + controls, highlight=False)
    table = Table()
    if several:
        table.add_column("budget", justify="right")
    for name, justify in (("model", "left"), ("type", "left"), ("pass@1 % [95 % CI]", "right"),
                          ("Δ vs base [95 % CI]", "right"), ("p", "right"), ("thought tok ✓/✗ (mean)", "right"),
                          ("cut off %", "right"), ("looped %", "right"), ("tok/s", "right"), ("accepted %", "right")):
        table.add_column(name, justify=justify)
    if several:
        table.add_column("new / reused", justify="right")
    for r in rows:
        delta = "base" if r["delta"] is None else (f"{100 * r['delta']:+.1f} [{100 * r['delta_low']:+.1f}, "
                                                   f"{100 * r['delta_high']:+.1f}]")
        thought = "/".join("–" if v is None else f"{v:.0f}" for v in (r["thought_mean_correct"],
                                                                     r["thought_mean_wrong"]))
        budget = [] if not several else ["none" if r["reasoning_budget"] is None else str(r["reasoning_budget"])]
        table.add_row(*budget, r["model"], r["type"] or "", f"{_pct(r['pass_at_1'])} [{_pct(r['pass_low'])}, "
                      f"{_pct(r['pass_high'])}]", delta, "" if r["p_value"] is None else f"{r['p_value']:.3f}",
                      thought, f"{r['cut_off_pct']:.1f}", f"{r['looped_pct']:.1f}",
                      "–" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}", _pct(r["acceptance"]),
                      *([f"{r['new_samples']} / {r['reused_samples']}"] if several else []))
    stdout.print(table)
    stdout.print("Δ: paired bootstrap over problems; p: exact two-sided sign test over problems (McNemar's exact "
                 "test with one sample each)." + (" Each budget's rungs against the base at the same budget; "
                                                  "reused: samples of a larger budget whose thought ended before "
                                                  "this one." if several else ""), style="dim", highlight=False)


def _thought_controls(protocol: Protocol) -> str:
    budget = "" if protocol.reasoning_budget is None else f", reasoning budget {protocol.reasoning_budget}"
    return f"{budget}, loop guard {protocol.loop_guard}"


class _Bars(Bars):
    """One bar per model on stderr: samples done of all."""

    def __init__(self, enabled: bool):
        super().__init__(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                         enabled=enabled)
        self._tasks: dict = {}

    def update(self, name: str, done: int, total: int) -> None:
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(name, total=total)
        self._progress.update(self._tasks[name], completed=done, total=total)
