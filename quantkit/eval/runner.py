"""`quantkit eval`: generate answers to a task's problems with each model of a ladder (in-process on the engine,
or against any OpenAI-compatible endpoint), grade them, and compare every rung with the base.

DeepSeek's protocol by default: the problem and the math instruction in one user message, no system prompt,
`<think>\\n` forced (the chat template's generation prompt, as `chat` and `serve` make it), temperature 0.6,
top-p 0.95, k samples per problem (pass@1 is their mean), the token budget capped by the context. Each sample
gets its own seed, derived from `--seed`, the problem's index and the sample's index, and recorded.

Every finished sample is appended to `<out>/<model>.<task>-<settings>.jsonl` (records.py) as soon as it is
graded: a re-run after Ctrl-C, a crash or SIGKILL generates only what is missing and ends with the same table.

Several reasoning budgets (`evaluate_budgets`): one samples file per budget, the largest evaluated first. A
sample of a larger budget whose thought ended (by itself, by the loop guard or at max_tokens) before the smaller
budget's count is the generation the smaller budget makes too (same prompt, same seed, the budget never fired),
so it is copied into the smaller budget's file instead of generated again. On one sequence at a time it is the
very same token stream; with several sequences in a batch, llama.cpp's sums may round differently per batch,
and it is then an equally valid draw from the same distribution. Only the engine's records say how many thought
tokens the budget counted (`thought_tokens`); samples from an endpoint are never reused.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..engine.thinking import BUDGET_MESSAGE, LOOP_GUARD_MODES, Thinking, check_budget
from ..errors import InvalidArgumentError
from ..models import R1_TEMPERATURE, R1_TOP_K, R1_TOP_P
from .backends import Backend, EndpointBackend, EngineBackend
from .grading import Grader
from .records import RecordWriter, Sample, done_keys, read_samples
from .stats import Difference, Summary, correct_by_problem, paired_difference, summarize
from .tasks import Problem

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (model, samples done, samples in all)


@dataclass(frozen=True)
class Protocol:
    """How each answer is asked for; recorded in the report and (but for samples and limit) in the file name."""

    samples: int = 1
    limit: int | None = None
    max_tokens: int = 32768
    temperature: float = R1_TEMPERATURE
    top_p: float = R1_TOP_P
    top_k: int = R1_TOP_K
    seed: int = 0
    reasoning_budget: int | None = None  # most thought tokens, then the closing text is forced (None: no limit)
    reasoning_budget_message: str = BUDGET_MESSAGE
    loop_guard: str = "off"  # off by default: accuracy is measured unaided

    def __post_init__(self) -> None:
        check_budget(self.reasoning_budget)
        if self.loop_guard not in LOOP_GUARD_MODES:
            raise InvalidArgumentError(f"--loop-guard must be one of {', '.join(LOOP_GUARD_MODES)}, not "
                                       f"{self.loop_guard!r}")
        if self.samples < 1:
            raise InvalidArgumentError(f"--samples must be ≥ 1, not {self.samples}")
        if self.limit is not None and self.limit < 1:
            raise InvalidArgumentError(f"--limit must be ≥ 1, not {self.limit}")
        if self.max_tokens < 1:
            raise InvalidArgumentError(f"--max-tokens must be ≥ 1, not {self.max_tokens}")

    def seed_of(self, problem_index: int, sample: int) -> int | None:
        """The sampler seed of one sample (None when greedy: no draw to seed)."""
        if self.temperature == 0:
            return None
        return (self.seed * 1_000_003 + problem_index * 1_009 + sample) & 0xFFFFFFFF

    @property
    def thinking(self) -> Thinking:
        return Thinking(self.reasoning_budget, self.reasoning_budget_message, self.loop_guard)

    def key(self, task: str) -> str:
        """What a samples file's answers depend on, besides the model: samples and limit only add to it; the
        thought's controls only when they are not the defaults (files written before them keep their names)."""
        defaults = asdict(Protocol())
        settings = {k: v for k, v in asdict(self).items() if k not in ("samples", "limit")
                    and not (k in _THOUGHT_SETTINGS and v == defaults[k])}
        digest = hashlib.sha256(json.dumps({"task": task, **settings}, sort_keys=True).encode()).hexdigest()
        return digest[:8]


_THOUGHT_SETTINGS = ("reasoning_budget", "reasoning_budget_message", "loop_guard")


@dataclass
class ModelResult:
    name: str  # the file name, or the endpoint's model name
    path: str | None
    file_type: str | None
    size_bytes: int | None
    samples_file: str
    summary: Summary
    new_samples: int
    vs_base: Difference | None = None
    is_base: bool = False
    reused_samples: int = 0  # copied from a larger budget's samples file (evaluate_budgets), not generated


@dataclass
class EvalResult:
    task: str
    protocol: Protocol
    problems: int
    models: list[ModelResult] = field(default_factory=list)


# ---- one model -----------------------------------------------------------------------------------------------

def select(problems: list[Problem], protocol: Protocol) -> list[Problem]:
    return problems[: protocol.limit] if protocol.limit else problems


class _LazyWriter:
    def __init__(self, path: Path):
        self.path = path
        self._writer: RecordWriter | None = None

    def append(self, sample: Sample) -> None:
        if self._writer is None:
            self._writer = RecordWriter(self.path)
        self._writer.append(sample)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def _run_model(backend: Backend, problems: list[Problem], protocol: Protocol, grader: Grader, writer: _LazyWriter,
                     done: set[tuple[str, int]], concurrency: int, progress: Progress | None) -> int:
    """Generate and grade every (problem, sample) not yet done; returns how many were made."""
    todo = [(i, p, k) for i, p in enumerate(problems) for k in range(protocol.samples) if (p.id, k) not in done]
    total, finished = len(problems) * protocol.samples, len(problems) * protocol.samples - len(todo)
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def one(index: int, problem: Problem, k: int) -> None:
        nonlocal finished
        async with gate:
            seed = protocol.seed_of(index, k)
            g = await backend.generate(problem.prompt, protocol, seed)
        answer = g.graded_answer
        grade = await loop.run_in_executor(None, grader.grade_one, problem.kind, problem.answer, answer)
        writer.append(Sample(problem.id, k, seed, g.text, g.reasoning, answer or "", problem.answer, grade.extracted,
                             grade.verdict, g.prompt_tokens, g.reasoning_tokens, g.answer_tokens, g.finish_reason,
                             g.seconds, extra={"backend": backend.name}, forced_tokens=g.forced_tokens,
                             budget_reached=g.budget_reached, looped=g.looped,
                             prompt_eval_tokens=g.prompt_eval_tokens, drafted_tokens=g.drafted_tokens,
                             accepted_tokens=g.accepted_tokens, thought_tokens=g.thought_tokens))
        finished += 1
        if progress:
            progress(backend.name, finished, total)

    if protocol.reasoning_budget is not None and not getattr(backend, "thinks", True):
        log.warning("--reasoning-budget has no effect: %s's chat template has no <think>", backend.name)
    if progress:
        progress(backend.name, finished, total)
    await asyncio.gather(*(one(i, p, k) for i, p, k in todo))
    return len(todo)


# ---- a ladder -----------------------------------------------------------------------------------------------

def samples_file(out_dir: Path, name: str, task: str, protocol: Protocol) -> Path:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).removesuffix(".gguf")
    return out_dir / f"{stem}.{task}-{protocol.key(task)}.jsonl"


def evaluate(models: list[str | Path], problems: list[Problem], task: str, protocol: Protocol = Protocol(), *,
             out_dir: str | Path = "eval", endpoint: str | None = None, api_key: str | None = None,
             parallel: int = 4, n_ctx: int = 8192, n_gpu_layers: int | str = "auto", threads: int | None = None,
             grader_workers: int = 2, progress: Progress | None = None, rpc: list[str] | None = None,
             speculation=None) -> EvalResult:
    """Evaluate each of `models` (GGUF paths; with `endpoint`, model names on that server) on `problems`; the
    first is the base the others are compared with. Resumes from the samples files in `out_dir`. `rpc`:
    ggml-rpc-server hosts (HOST:PORT) the engine offloads to as well; `speculation`: the engine's speculative
    decoding (engine.speculative.Speculation), which changes no token."""
    (result,) = evaluate_budgets(models, problems, task, [protocol.reasoning_budget], protocol, out_dir=out_dir,
                                 endpoint=endpoint, api_key=api_key, parallel=parallel, n_ctx=n_ctx,
                                 n_gpu_layers=n_gpu_layers, threads=threads, grader_workers=grader_workers,
                                 progress=progress, rpc=rpc, speculation=speculation)
    return result


def evaluate_budgets(models: list[str | Path], problems: list[Problem], task: str, budgets: list[int | None],
                     protocol: Protocol = Protocol(), *, out_dir: str | Path = "eval", endpoint: str | None = None,
                     api_key: str | None = None, parallel: int = 4, n_ctx: int = 8192,
                     n_gpu_layers: int | str = "auto", threads: int | None = None, grader_workers: int = 2,
                     progress: Progress | None = None, rpc: list[str] | None = None,
                     speculation=None) -> list[EvalResult]:
    """`evaluate` at each reasoning budget of `budgets` (None: no limit, the largest), one result per budget,
    smallest first; a larger budget's samples that ended before a smaller budget are reused for it (see the
    module's docstring). `protocol` gives everything else."""
    from ..files import output_dir

    if not models:
        raise InvalidArgumentError("no model given",
                                   hint="pass one or more .gguf files (or model names with --endpoint)")
    if parallel < 1:
        raise InvalidArgumentError(f"--parallel must be ≥ 1, not {parallel}")
    if not budgets:
        raise InvalidArgumentError("no reasoning budget given", hint="give --reasoning-budget N or N,N,…")
    for b in budgets:
        check_budget(b)
    order = sorted(set(budgets), key=_budget_order)  # smallest first, no limit last
    protocols = {b: replace(protocol, reasoning_budget=b) for b in order}
    problems = select(problems, protocol)
    if endpoint is None:
        from ..runtime import check_gguf_file

        for path in models:  # every file checked before the first one is evaluated
            check_gguf_file(Path(path))
    results = {b: EvalResult(task, protocols[b], len(problems)) for b in order}
    with output_dir(Path(out_dir)) as out, Grader(workers=grader_workers) as grader:  # kept once it holds samples
        for model in models:
            larger: list[Path] = []  # this model's samples files of the budgets done so far (larger ones)
            for b in reversed(order):
                p = protocols[b]
                name = str(model) if endpoint else Path(model).name
                reused = _reuse(samples_file(out, name, task, p), b, larger, problems, p.samples)
                one = _evaluate_one(model, problems, task, p, out, grader, progress, endpoint=endpoint,
                                    api_key=api_key, parallel=parallel, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers,
                                    threads=threads, rpc=rpc, speculation=speculation)
                one.reused_samples = reused
                results[b].models.append(one)
                larger.append(Path(one.samples_file))
    for b in order:
        _compare(results[b], out, task)
    return [results[b] for b in order]


def _budget_order(budget: int | None) -> float:
    return float("inf") if budget is None else budget


def _reuse(dest: Path, budget: int | None, larger: list[Path], problems: list[Problem], samples: int) -> int:
    """Copy into `dest` the samples of the `larger` budgets' files that `budget` would have left as they are (the
    thought's own tokens below it, the budget never reached) and that `dest` lacks; returns how many."""
    if budget is None or not larger:
        return 0
    wanted = {(p.id, k) for p in problems for k in range(samples)}
    have = done_keys(read_samples(dest)) if dest.exists() else set()
    found: dict[tuple[str, int], Sample] = {}
    for source in larger:
        for s in read_samples(source):
            if (s.key in wanted and s.key not in have and s.key not in found and s.thought_tokens is not None
                    and not s.budget_reached and s.thought_tokens < budget):
                found[s.key] = replace(s, extra={**s.extra, "reused_from": source.name})
    if found:
        with RecordWriter(dest) as writer:
            for key in sorted(found):
                writer.append(found[key])
        log.info("%s: %d samples reused from larger budgets", dest.name, len(found))
    return len(found)


def _evaluate_one(model, problems, task, protocol, out, grader, progress, *, endpoint, api_key, parallel, n_ctx,
                  n_gpu_layers, threads, rpc=None, speculation=None) -> ModelResult:
    name = str(model) if endpoint else Path(model).name
    path = samples_file(out, name, task, protocol)
    done = done_keys(read_samples(path)) if path.exists() else set()
    wanted = {(p.id, k) for p in problems for k in range(protocol.samples)}
    made, seconds = 0, 0.0
    if wanted - done:
        async def run() -> int:
            backend = (EndpointBackend(endpoint, name, api_key=api_key, concurrency=parallel) if endpoint else
                       EngineBackend(model, parallel=parallel, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers,
                                     threads=threads, rpc=rpc, speculation=speculation))
            writer = _LazyWriter(path)  # no file until a sample is done: a failed start leaves nothing
            try:
                await backend.check()
                return await _run_model(backend, problems, protocol, grader, writer, done, backend.concurrency,
                                        progress)
            finally:
                writer.close()
                await backend.aclose()

        t0 = time.perf_counter()
        made = asyncio.run(run())
        seconds = time.perf_counter() - t0
    samples = [s for s in read_samples(path) if s.key in wanted]
    summary = summarize(samples, wall_seconds=seconds if made == len(samples) else None)
    info = _file_info(model) if not endpoint else (None, None)
    return ModelResult(name, None if endpoint else str(model), info[0], info[1], str(path), summary, made)


def _file_info(path) -> tuple[str | None, int | None]:
    from ..gguf.info import inspect_gguf

    info = inspect_gguf(Path(path))
    return info.file_type, info.file_size


def _compare(result: EvalResult, out: Path, task: str) -> None:
    """Each rung against the first model, on the same problems."""
    if not result.models:
        return
    base = result.models[0]
    base.is_base = True
    base_correct = correct_by_problem(read_samples(base.samples_file))
    for m in result.models[1:]:
        other = correct_by_problem(read_samples(m.samples_file))
        keep = set(base_correct) & set(other)
        m.vs_base = paired_difference({p: base_correct[p][:result.protocol.samples] for p in keep},
                                      {p: other[p][:result.protocol.samples] for p in keep})


def eval_table(result: EvalResult) -> list[dict]:
    """One row per model: what `quantkit eval` prints, and its --json/--csv."""
    rows = []
    for m in result.models:
        s, d = m.summary, m.vs_base
        rows.append({
            "model": m.name, "type": m.file_type, "size_bytes": m.size_bytes,
            "pass_at_1": s.pass_at_1.value, "pass_low": s.pass_at_1.low, "pass_high": s.pass_at_1.high,
            "delta": d.delta if d else None, "delta_low": d.low if d else None, "delta_high": d.high if d else None,
            "p_value": d.p_value if d else None,
            "thought_mean_correct": s.thought_tokens_correct.mean, "thought_median_correct":
                s.thought_tokens_correct.median, "thought_mean_wrong": s.thought_tokens_wrong.mean,
            "thought_median_wrong": s.thought_tokens_wrong.median, "cut_off_pct": 100.0 * s.cut_off,
            "looped_pct": 100.0 * s.looped, "budget_reached_pct": 100.0 * s.budget_reached,
            "tokens_per_s": s.tokens_per_second, "acceptance": s.acceptance, "samples": s.pass_at_1.samples, "new_samples": m.new_samples,
            "reused_samples": m.reused_samples, "reasoning_budget": result.protocol.reasoning_budget,
            "verdicts": s.verdicts, "samples_file": m.samples_file,
        })
    return rows
