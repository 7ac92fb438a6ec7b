"""The steps of `quantkit run`, each calling the same library function as the command of the same job, and
storing its result unchanged. A step whose stored record still matches its inputs is kept, not redone.

    source      the checkpoint: the Hub download, a local folder, or the embedded model exported once
    convert     the base GGUF (convert, as `quantkit convert SOURCE --outtype T`)
    quantize    one GGUF per ladder rung (quantize, as `quantkit convert SOURCE -t TYPE`), one per budget mix
                (as `quantkit quantize BASE --target-size S / --target-bpw X`)
    perplexity  PPL of every file, KL-divergence of every rung against the base (as `quantkit perplexity`)
    bench       pp/tg tokens/s of every file (as `quantkit bench`)
    memory      memory at the recipe's context, and the fit on each GPU size (as `quantkit estimate-memory`)
    chat        one answer from the recommended rung (as `quantkit chat --prompt`)
    eval        pass@1 of every file on the recipe's [eval] task, each rung against the base (as `quantkit eval`)
    report      report.md, .csv, .json and .png from the records above, and the model card README.md
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import RunStateError
from ..convert.embedded import EMBEDDED_MODELS
from .recipes import Recipe
from ..share.report import GPU_SIZES_GIB, write_report
from .drafts import draft_model
from .facts import chat_rung, report_facts
from .progress import JobProgress
from .state import StepStore, fingerprint, rung_key

log = logging.getLogger(__name__)


@dataclass
class Job:
    recipe: Recipe
    out_dir: Path
    store: StepStore
    progress: JobProgress
    threads: int | None = None
    n_gpu_layers: int | str = "auto"
    force: bool = False
    rpc: list[str] | None = None  # ggml-rpc-server hosts (HOST:PORT) every model load offloads to as well

    @property
    def models_dir(self) -> Path:
        return self.out_dir / "models"

    def kept(self, key: str, inputs: dict):
        """The stored result of `key` when it may be kept (same inputs, no --force)."""
        return None if self.force else self.store.result(key, inputs)

    def base(self) -> dict:
        result = self.store.result("convert")
        if result is None or not Path(result["base"]["path"]).is_file():
            raise RunStateError("the base GGUF has not been made yet (the convert step)")
        return result

    def models(self) -> list[tuple[str, Path]]:
        """(rung, path) of the base and every rung (a type, or a budget mix's label), in ladder order."""
        base = self.base()["base"]
        out = [(base["type"], Path(base["path"]))]
        for rung in self.recipe.rungs:
            result = self.store.result(rung_key("quantize", rung))
            if result is None or not Path(result["path"]).is_file():
                raise RunStateError(f"the {rung} rung has not been made yet (the quantize step)")
            out.append((rung, Path(result["path"])))
        return out


Step = Callable[[Job], str]  # returns "done" or "kept"


def _timed(job: Job, key: str, inputs: dict, run: Callable[[], object]) -> str:
    t0 = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - t0
    job.store.save(key, inputs, result, seconds)
    log.info("%s done in %.1f s", key, seconds)
    return "done"


# ---- source and conversion ----------------------------------------------------------------------------------

def source(job: Job) -> str:
    r = job.recipe
    inputs = {"source": r.source, "revision": r.revision}
    job.progress.start(f"source {r.source}")
    kept = job.kept("source", inputs)
    if kept is not None and Path(kept["folder"]).is_dir():
        job.progress.finish()
        return "kept"
    status = _timed(job, "source", inputs, lambda: _fetch_source(r))
    job.progress.finish()
    return status


def _fetch_source(recipe: Recipe) -> dict:
    if recipe.embedded is not None:
        from ..convert.embedded import embedded_checkpoint

        folder = embedded_checkpoint(EMBEDDED_MODELS[recipe.embedded])
        return {"folder": folder, "convert_source": folder, "revision": None}
    from ..convert.source import resolve_source

    src = resolve_source(recipe.source, recipe.revision)
    # a Hub checkpoint is converted by repo id, so that the files are named after the repo, not the snapshot
    return {"folder": src.folder, "convert_source": recipe.source if src.repo_id else src.folder,
            "revision": recipe.revision if src.repo_id else None}


def convert(job: Job) -> str:
    from ..convert import convert as convert_checkpoint
    from ..quantize.ladder import is_complete

    src = job.store.result("source")
    if src is None:
        raise RunStateError("the checkpoint has not been fetched yet (the source step)")
    inputs = {"source": src["convert_source"], "revision": src["revision"], "outtype": job.recipe.outtype}
    job.progress.start("convert base GGUF")
    kept = job.kept("convert", inputs)
    if kept is not None and is_complete(Path(kept["base"]["path"]), kept["base"]["type"]):
        job.progress.finish()
        return "kept"

    def run() -> dict:
        result = convert_checkpoint(src["convert_source"], job.models_dir, outtype=job.recipe.outtype,
                                    revision=src["revision"], force=job.force, threads=job.threads,
                                    progress=lambda done, total, label="": job.progress.part(done / max(total, 1)))
        return {"name": result.name, "base": result.base}

    status = _timed(job, "convert", inputs, run)
    job.progress.finish()
    return status


def quantize(job: Job) -> str:
    from ..quantize.ladder import is_complete, output_name
    from ..quantize.file import quantize as quantize_file

    convert_result = job.base()
    base = Path(convert_result["base"]["path"])
    imatrix = job.recipe.imatrix_path
    if job.recipe.imatrix_auto:  # computed once beside the base, calibrated apart from the scored text
        from ..quantize.ladder import resolve_imatrix

        spec = job.recipe.imatrix if ":" in job.recipe.imatrix else f"auto:{job.recipe.perplexity.dataset}"
        imatrix = resolve_imatrix(spec, base, threads=job.threads)
    statuses = []
    for qtype in job.recipe.ladder:
        key = rung_key("quantize", qtype)
        dest = job.models_dir / output_name(convert_result["name"], qtype)
        inputs = {"base": fingerprint(base), "type": qtype, "imatrix": fingerprint(imatrix) if imatrix else None}
        job.progress.start(f"quantize {qtype}")
        complete = not job.force and is_complete(dest, qtype)
        if complete and job.store.record(key) is None:
            # finished just before a crash, before its record was written: keep it, as `convert` does
            job.store.save(key, inputs, {"path": dest, "type": qtype, "n_bytes": dest.stat().st_size,
                                         "seconds": 0.0, "imatrix": imatrix.name if imatrix else None}, 0.0)
        if complete and job.kept(key, inputs) is not None:
            statuses.append("kept")
        else:
            statuses.append(_timed(job, key, inputs, lambda t=qtype: {
                **vars(quantize_file(base, dest, t, imatrix=imatrix, threads=job.threads)),
                "imatrix": imatrix.name if imatrix else None}))
        job.progress.finish()
    if job.recipe.targets:
        statuses.append(_quantize_mixes(job, convert_result["name"], base, imatrix))
    return _overall(statuses)


def _quantize_mixes(job: Job, name: str, base: Path, imatrix: Path | None) -> str:
    """Every budget mix of the recipe, planned and written as `quantkit quantize --target-size/-bpw` does; the
    damage is measured once for all the mixes that are not kept."""
    from ..quantize.ladder import quantize_ladder

    todo = []
    for target in job.recipe.targets:
        inputs = _mix_inputs(base, target, imatrix)
        kept = job.kept(rung_key("quantize", target.label), inputs)
        if kept is None or not Path(kept["path"]).is_file():
            todo.append(target)
    if not todo:
        job.progress.finish(len(job.recipe.targets))
        return "kept"
    job.progress.start("quantize " + ", ".join(t.label for t in todo))
    t0 = time.perf_counter()
    made = quantize_ladder(base, job.models_dir, name, [], targets=todo, imatrix=imatrix, force=job.force,
                           threads=job.threads)
    for target, f in zip(todo, made):
        job.store.save(rung_key("quantize", target.label), _mix_inputs(base, target, imatrix),
                       {"path": f.path, "type": target.label, "n_bytes": f.n_bytes, "seconds": f.seconds,
                        "imatrix": imatrix.name if imatrix else None, "mix": mix_summary(target, f.tensor_types)},
                       f.seconds if f.made else 0.0)
    log.info("budget mixes %s done in %.1f s", ", ".join(t.label for t in todo), time.perf_counter() - t0)
    job.progress.finish(len(job.recipe.targets))
    return "done"


def _mix_inputs(base: Path, target, imatrix: Path | None) -> dict:
    return {"base": fingerprint(base), "target": target.describe(),
            "imatrix": fingerprint(imatrix) if imatrix else None}


def mix_summary(target, tensor_types: dict[str, str]) -> dict:
    """What the report and the card say of a mix: its budget and how many tensors got each type."""
    counts: dict[str, int] = {}
    for t in tensor_types.values():
        counts[t] = counts.get(t, 0) + 1
    return {"target": target.describe(), "types": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def _overall(statuses: list[str]) -> str:
    return "kept" if statuses and all(s == "kept" for s in statuses) else "done"


# ---- measurements -------------------------------------------------------------------------------------------

def perplexity(job: Job) -> str:
    from ..measure.texts import dataset_path, read_text
    from ..measure.perplexity import Settings, perplexity as measure

    models = job.models()
    p = job.recipe.perplexity
    text_file = dataset_path(p.dataset)
    text = read_text(text_file)
    settings = Settings(n_ctx=p.ctx, n_batch=p.batch, chunks=p.chunks, threads=job.threads,
                        n_gpu_layers=job.n_gpu_layers, rpc=job.rpc)
    inputs = {"files": [fingerprint(path) for _, path in models],
              "text": {"dataset": p.dataset, "sha256": hashlib.sha256(text).hexdigest()},
              "settings": {"n_ctx": p.ctx, "n_batch": p.batch, "chunks": p.chunks, "kl_top_k": settings.kl_top_k}}
    if job.kept("perplexity", inputs) is not None:
        job.progress.finish(len(models))
        return "kept"
    names = [path.name for _, path in models]
    start = job.progress.done

    def for_model(name: str):
        index = names.index(name)
        job.progress.done = start + index
        job.progress.start(f"perplexity {models[index][0]}")
        return lambda done, total, ppl: job.progress.part(done / total)

    def run() -> dict:
        results = measure([path for _, path in models], text, settings, progress=for_model)
        return {"text_file": text_file, "dataset": p.dataset, "results": results}

    status = _timed(job, "perplexity", inputs, run)
    job.progress.done = start
    job.progress.finish(len(models))
    return status


def bench(job: Job) -> str:
    from ..measure.bench import bench as measure

    b = job.recipe.bench
    statuses = []
    for qtype, path in job.models():
        key = rung_key("bench", qtype)
        inputs = {"file": fingerprint(path), "n_prompt": b.n_prompt, "n_gen": b.n_gen,
                  "repetitions": b.repetitions, "threads": job.threads, "n_gpu_layers": job.n_gpu_layers}
        job.progress.start(f"bench {qtype}")
        if job.kept(key, inputs) is not None:
            statuses.append("kept")
        else:
            statuses.append(_timed(job, key, inputs, lambda p=path: measure(
                [p], n_prompt=b.n_prompt, n_gen=b.n_gen, repetitions=b.repetitions, threads=job.threads,
                n_gpu_layers=job.n_gpu_layers, rpc=job.rpc)))
        job.progress.finish()
    return _overall(statuses)


def memory(job: Job) -> str:
    from ..memory import estimate_memory

    m = job.recipe.memory
    statuses = []
    for qtype, path in job.models():
        key = rung_key("memory", qtype)
        inputs = {"file": fingerprint(path), "ctx": m.ctx, "kv_type": m.kv_type, "gpus_gib": list(GPU_SIZES_GIB)}
        job.progress.start(f"memory {qtype}")
        if job.kept(key, inputs) is not None:
            statuses.append("kept")
        else:
            def run(p=path, t=_memory_type(job.recipe, qtype)) -> dict:
                estimate = estimate_memory(str(p), [t], n_ctx=m.ctx, kv_type=m.kv_type)
                fits = {str(g): estimate_memory(str(p), [t], n_ctx=m.ctx, kv_type=m.kv_type,
                                                vram_gib=[g]).types[0].fit for g in GPU_SIZES_GIB}
                return {"estimate": estimate, "fits": fits}

            statuses.append(_timed(job, key, inputs, run))
        job.progress.finish()
    return _overall(statuses)


def _memory_type(recipe: Recipe, rung: str) -> str:
    """A mix is estimated as written (its own tensor types); a ladder type by libllama's choices for it."""
    from ..memory import AS_WRITTEN

    return AS_WRITTEN if recipe.target_of(rung) is not None else rung


# ---- the answer and the report ------------------------------------------------------------------------------

def chat(job: Job) -> str:
    from ..chat import ChatSession, Sampling, turn_summary
    from ..engine.speculative import speculation

    c = job.recipe.chat
    job.progress.start("chat")
    qtype = chat_rung(report_facts(job.recipe, job.store))
    path = dict(job.models())[qtype]
    inputs = {"file": fingerprint(path), "prompt": c.prompt, "max_tokens": c.max_tokens,
              "temperature": c.temperature, "top_p": c.top_p, "ctx": c.ctx, "seed": c.seed, **_draft_inputs(job, c)}
    if job.kept("chat", inputs) is not None:
        job.progress.finish()
        return "kept"

    spec = speculation(c.spec, draft_model(job, c.draft, c.draft_type), p_min=c.draft_p_min)  # made before the timing starts
    job.progress.start("chat")

    def run() -> dict:
        sampling = Sampling(temperature=c.temperature, top_p=c.top_p, seed=c.seed)
        with ChatSession.open(path, n_ctx=c.ctx, n_gpu_layers=job.n_gpu_layers, threads=job.threads,
                              sampling=sampling, rpc=job.rpc, speculation=spec) as session:
            for n, _ in enumerate(session.send(c.prompt, c.max_tokens), start=1):
                job.progress.part(n / c.max_tokens)
            return {"type": qtype, "file": path.name, "prompt": c.prompt, **turn_summary(session.turns[-1].result)}

    status = _timed(job, "chat", inputs, run)
    job.progress.finish()
    return status


def evaluate(job: Job) -> str:
    """pass@1 of every file on the recipe's task, each rung against the base (as `quantkit eval`)."""
    import json
    from dataclasses import asdict

    from ..engine.speculative import speculation
    from ..eval.runner import Protocol, eval_table, evaluate_budgets
    from ..eval.tasks import load_task

    e = job.recipe.eval
    models = job.models()
    if e is None:
        job.progress.finish(len(models))
        return "skipped"
    protocol = Protocol(samples=e.samples, limit=e.limit, max_tokens=e.max_tokens, seed=e.seed,
                        reasoning_budget=e.reasoning_budget, loop_guard=e.loop_guard)
    budgets = list(e.budgets) if e.budgets else [e.reasoning_budget]
    inputs = {"files": [fingerprint(path) for _, path in models], "task": e.task, "protocol": asdict(protocol),
              "ctx": e.ctx, **_draft_inputs(job, e)}
    if e.budgets:  # (absent otherwise: a recipe without budgets keeps its record)
        inputs["budgets"] = budgets
    if job.kept("eval", inputs) is not None:
        job.progress.finish(len(models))
        return "kept"
    # the samples files of these very files and settings: a run stopped midway resumes from them
    folder = job.out_dir / "eval" / hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    names = [path.name for _, path in models]
    start = job.progress.done

    def progress(name: str, done: int, total: int) -> None:
        index = names.index(name)
        job.progress.done = start + index
        job.progress.start(f"eval {models[index][0]}")
        job.progress.part(done / max(total, 1))

    spec = speculation(e.spec, draft_model(job, e.draft, e.draft_type), p_min=e.draft_p_min)

    def run() -> dict:
        results = evaluate_budgets([path for _, path in models], load_task(e.task), e.task, budgets, protocol,
                                   out_dir=folder, parallel=e.parallel, n_ctx=e.ctx, n_gpu_layers=job.n_gpu_layers,
                                   threads=job.threads, progress=progress, rpc=job.rpc,
                                   speculation=spec)
        # the rows of the largest budget are the table's; with budgets, every budget's rows for the budget panel
        largest = results[-1]
        stored = {"task": e.task, "problems": largest.problems, "protocol": largest.protocol,
                  "rows": eval_table(largest)}
        if e.budgets:
            stored["budgets"] = [{"reasoning_budget": r.protocol.reasoning_budget, "rows": eval_table(r)}
                                 for r in results]
        return stored

    status = _timed(job, "eval", inputs, run)
    job.progress.done = start
    job.progress.finish(len(models))
    return status


def _draft_inputs(job: Job, settings) -> dict:
    """A draft as a step's input: a local file by its fingerprint, a source by what the recipe names (absent
    without a draft: older records are kept)."""
    from .recipes import local_draft

    if settings.draft is None:
        return {}
    local = local_draft(settings.draft, job.recipe.path.parent)
    named = fingerprint(local) if local is not None else {"source": settings.draft, "type": settings.draft_type}
    return {"draft": named, "draft_p_min": settings.draft_p_min}


def report(job: Job) -> str:
    from ..share.card import write_card
    from ..runtime import describe_device

    job.progress.start("report")
    write_report(report_facts(job.recipe, job.store, describe_device()), job.out_dir)
    write_card(job.out_dir)  # README.md for the Hub, from report.json
    job.progress.finish()
    return "done"


STEPS: dict[str, Step] = {"source": source, "convert": convert, "quantize": quantize, "perplexity": perplexity,
                          "bench": bench, "memory": memory, "chat": chat, "eval": evaluate, "report": report}


def units(step: str, recipe: Recipe) -> int:
    """How many progress units a step counts for."""
    n = len(recipe.rungs)
    return {"quantize": n, "perplexity": n + 1, "bench": n + 1, "memory": n + 1, "eval": n + 1}.get(step, 1)
