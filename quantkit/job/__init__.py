"""`run_recipe`: the whole job of a recipe — checkpoint → base GGUF → quant ladder → perplexity and KL-divergence
→ speed → memory → one answer → report — resumable step by step (see steps.py for what each step calls, and
state.py for what it keeps).

    result = run_recipe(load_recipe("smollm2"))
    result.report["md"]        # out/smollm2/report.md
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidArgumentError
from ..files import output_dir, remove_stale_partials
from .recipes import Recipe
from ..share.report import REPORT_FILES
from .facts import report_facts
from .progress import Callback, JobProgress
from .state import StepStore
from .steps import STEPS, Job, units

log = logging.getLogger(__name__)

__all__ = ["STEPS", "JobResult", "StepOutcome", "default_out_dir", "run_recipe", "select_steps"]


@dataclass
class StepOutcome:
    step: str
    status: str  # done | kept | skipped
    seconds: float


@dataclass
class JobResult:
    recipe: str
    out_dir: Path
    steps: list[StepOutcome]
    seconds: float
    files: list[str] = field(default_factory=list)  # the base GGUF and the rungs
    report: dict[str, str] = field(default_factory=dict)  # format → path, for the files that exist
    recommended: dict[str, str | None] = field(default_factory=dict)  # GPU GiB → rung
    chat: dict | None = None


def default_out_dir(recipe: Recipe) -> Path:
    return Path("out") / recipe.name


def select_steps(only: list[str] | None = None, skip: list[str] | None = None) -> list[str]:
    """The steps to run, in job order; names are checked."""
    for name in (*(only or []), *(skip or [])):
        if name not in STEPS:
            raise InvalidArgumentError(f"unknown step {name!r}", hint=f"steps: {', '.join(STEPS)}")
    chosen = [s for s in STEPS if not only or s in only]
    return [s for s in chosen if s not in (skip or [])]


def run_recipe(recipe: Recipe, out_dir: str | Path | None = None, *, only: list[str] | None = None,
               skip: list[str] | None = None, threads: int | None = None, n_gpu_layers: int | str = "auto",
               force: bool = False, progress: Callback | None = None, rpc: list[str] | None = None) -> JobResult:
    """Run the steps of `recipe` into `out_dir` (default `out/<recipe>`), keeping what is already complete;
    every model load offloads to the ggml-rpc-server hosts `rpc` (HOST:PORT) too."""
    chosen = select_steps(only, skip)
    with output_dir(Path(out_dir) if out_dir is not None else default_out_dir(recipe)) as out:  # gone if left empty
        total = sum(units(s, recipe) for s in chosen)
        job = Job(recipe, out, StepStore(out), JobProgress(progress, total), threads, n_gpu_layers, force,
                  rpc=rpc)
        for folder in (job.models_dir, job.store.folder):
            if folder.is_dir():
                remove_stale_partials(folder)
        t0 = time.perf_counter()
        outcomes = []
        for name in STEPS:
            if name not in chosen:
                outcomes.append(StepOutcome(name, "skipped", 0.0))
                continue
            t = time.perf_counter()
            status = STEPS[name](job)
            outcomes.append(StepOutcome(name, status, time.perf_counter() - t))
            log.info("step %s: %s", name, status)
    return _result(job, outcomes, time.perf_counter() - t0)


def _result(job: Job, outcomes: list[StepOutcome], seconds: float) -> JobResult:
    result = JobResult(job.recipe.name, job.out_dir, outcomes, seconds)
    facts = report_facts(job.recipe, job.store)
    result.files = [row["path"] for row in facts.rows]
    result.report = {fmt: str(job.out_dir / name) for fmt, name in REPORT_FILES.items()
                     if (job.out_dir / name).exists()}
    result.recommended = {str(g): r for g, r in facts.recommended.items()}
    result.chat = facts.chat
    return result
