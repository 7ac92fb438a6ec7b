"""`quantkit estimate-memory TARGET`"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from ..errors import InvalidArgumentError
from ..memory import ALL_TYPES, DRAFT_TYPE, MemoryEstimate, estimate_memory
from ..runtime.offload import plan_placement, rpc_devices
from ..memory.layers import describe
from ..quant_types import parse_types
from ._options import Calibrate, ImatrixFile, Json, Rpc, TargetBpw, TargetSize
from ._output import command, emit_json, stdout
from ._rpc import rpc_endpoints

if TYPE_CHECKING:
    from ..quantize.budget import BudgetPlans, RungDamage
    from ..quantize.mixes import Plan


def register(app: typer.Typer) -> None:
    app.command("estimate-memory")(run)


@command
def run(
    target: Annotated[str, typer.Argument(help="A size label (1.5B … 70B, 671B), a Hub repo id, a model folder, "
                                               "a .gguf file, or a .gguf URL (only its header is read).",
                                          show_default=False)],
    types: Annotated[Optional[List[str]], typer.Option("--type", "-t", help="Quant types (repeatable, comma-separated; default: the whole ladder and F16/BF16/F32).")] = None,
    ctx: Annotated[int, typer.Option("--ctx", "-c", help="Context size in tokens.")] = 4096,
    kv_type: Annotated[str, typer.Option("--kv-type", help="KV cache type: f16, q8_0 or q4_0.")] = "f16",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Logical batch size (llama.cpp -b).")] = 2048,
    ubatch: Annotated[int, typer.Option("--ubatch", min=1, help="Physical batch size (llama.cpp -ub).")] = 512,
    flash_attn: Annotated[bool, typer.Option("--flash-attn/--no-flash-attn", help="Flash attention (llama.cpp's default: on).")] = True,
    vram: Annotated[Optional[float], typer.Option("--vram", help="GPU memory in GiB.")] = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="Several GPUs' memory in GiB, e.g. 24,24.")] = None,
    tensors: Annotated[bool, typer.Option("--tensors", help="Show the type and size of every tensor.")] = False,
    rpc: Rpc = None,
    n_gpu_layers: Annotated[str, typer.Option("--n-gpu-layers", "-ngl", help="With --rpc: the layers to offload "
                                                                             "(a number or 'all').")] = "all",
    target_size: TargetSize = None,
    target_bpw: TargetBpw = None,
    imatrix: ImatrixFile = None,
    calibrate: Calibrate = None,
    draft: Annotated[Optional[str], typer.Option("--draft", "-md", help="A speculative-decoding draft to count "
                                                 "beside the target at the same context: a .gguf as written, a "
                                                 f"label, repo or folder at {DRAFT_TYPE}.", show_default=False)] = None,
    json: Json = False,
) -> None:
    """Weights per quant type, KV cache and compute buffers, and how many layers fit a GPU; with --target-size
    or --target-bpw (TARGET a local float GGUF), the per-tensor plan of each budget mix, before any quantizing."""
    from ..quantize.mixes import summary, targets

    vram_gib = _vram(vram, gpus)
    endpoints = rpc_endpoints(rpc)
    remote = rpc_devices(endpoints)
    if remote and vram_gib is None:  # the servers' free memory is what the layers must fit in
        vram_gib = [(d.memory_free or 0) / 2**30 for d in remote]
    chosen = parse_types(types) if types else list(ALL_TYPES)
    budgets = targets(target_size, target_bpw)
    for given, flag in ((imatrix, "--imatrix"), (calibrate, "--calibrate")):
        if given is not None and not budgets:
            raise InvalidArgumentError(f"{flag} is for planning a budget mix", hint="add --target-size or --target-bpw")
    est = estimate_memory(target, chosen, n_ctx=ctx, kv_type=kv_type, flash_attn=flash_attn, n_batch=batch,
                          n_ubatch=ubatch, vram_gib=vram_gib, with_tensors=tensors, draft=draft)
    placement = _placement(est, n_gpu_layers, endpoints) if remote else None
    plans = _plans(target, budgets, imatrix, calibrate) if budgets else None
    if json:
        doc = est if placement is None and plans is None else _as_dict(est)
        if placement is not None:
            doc["placement"] = placement
        if plans is not None:
            doc["plans"] = [summary(p) for p in plans.plans]
            doc["ladder"] = plans.ladder  # the standard types' damage by the same measure
        emit_json(doc)
        return
    show(est, tensors)
    if placement:
        stdout.print(f"placement with --n-gpu-layers {n_gpu_layers}: {describe(placement)}", markup=False,
                     highlight=False)
    if plans is not None:
        show_plans(plans)


def _placement(est: MemoryEstimate, n_gpu_layers: str, rpc: list[str]) -> list[str]:
    """llama.cpp's split of the offloaded layers over the devices (RPC servers first, then local GPUs)."""
    if str(n_gpu_layers).lower() == "auto":
        raise InvalidArgumentError("estimate-memory --rpc takes --n-gpu-layers as a number or 'all'")
    return plan_placement(est.n_layer, n_gpu_layers, est.target, est.n_ctx, rpc)


def _as_dict(est: MemoryEstimate) -> dict:
    from dataclasses import asdict

    return asdict(est)


def _plans(target: str, budgets: list, imatrix, calibrate: str | None = None) -> BudgetPlans:
    """Each budget's plan, and the measured damage of the standard ladder's types beside it."""
    from ..quantize.ladder import resolve_imatrix
    from ..quantize.budget import budget_base, plan_budgets

    base = budget_base(target)
    return plan_budgets(base, budgets, resolve_imatrix(imatrix, base), calibrate)


def show_plans(plans: BudgetPlans) -> None:
    for plan in plans.plans:
        show_plan(plan, plans.ladder)


def show_plan(plan: Plan, ladder: list[RungDamage]) -> None:
    import pandas as pd

    from ..quantize.mixes import layer_table
    from .convert import print_layer_table

    stdout.print(f"\nbudget mix {plan.target.label} ({plan.target.describe()}): {plan.file_bytes:,} bytes "
                 f"({plan.file_bytes / 2**20:.2f} MiB), {plan.bits_per_weight} bpw, labelled {plan.file_type}, "
                 f"damage {plan.error:.4g}" + (f", imatrix {plan.imatrix}" if plan.imatrix else "")
                 + (f", damage calibrated as predicted KLD ({plan.calibration})" if plan.calibration else ""),
                 markup=False, highlight=False)
    rows = [{"type": r.type, "file MiB": round(r.file_bytes / 2**20, 2), "bpw": r.bits_per_weight,
             "damage": f"{r.damage:.4g}"} for r in ladder if r.damage is not None]
    if rows:
        stdout.print("the standard types' damage by the same measure:", markup=False, highlight=False)
        stdout.print(pd.DataFrame(rows).to_string(index=False), markup=False, highlight=False)
    print_layer_table(layer_table(plan.types))


def _vram(vram: float | None, gpus: str | None) -> list[float] | None:
    if vram is not None and gpus is not None:
        raise InvalidArgumentError("give --vram or --gpus, not both")
    if gpus is not None:
        try:
            values = [float(v) for v in gpus.split(",") if v.strip()]
        except ValueError:
            raise InvalidArgumentError(f"--gpus {gpus!r} is not a list of GiB", hint="e.g. --gpus 24,24") from None
    else:
        values = [vram] if vram is not None else []
    if any(v <= 0 for v in values):
        raise InvalidArgumentError("GPU memory must be positive")
    return values or None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def show(est: MemoryEstimate, tensors: bool) -> None:
    import pandas as pd

    rt = est.runtime
    stdout.print(f"{est.name} ({est.architecture}, {est.n_layer} layers, {est.n_params / 1e9:.2f} B parameters) "
                 f"from {est.source}; ctx {est.n_ctx}, KV {est.kv_type}, flash attention "
                 f"{'on' if est.flash_attn else 'off'}, ubatch {est.n_ubatch}", markup=False, highlight=False)
    stdout.print(f"KV cache {_gib(rt.kv_bytes)} GiB, compute buffer {_gib(rt.compute_bytes)} GiB, "
                 f"output buffer {rt.output_bytes / 2**20:.2f} MiB", markup=False, highlight=False)
    rows = []
    for t in est.types:
        row = {"type": t.type, "bpw": t.bits_per_weight, "file GB": round(t.file_bytes / 1e9, 2),
               "file GiB": round(t.file_bytes / 2**30, 2), "total GiB": round(t.total_bytes / 2**30, 2),
               "CPU-only GiB": round(t.cpu_only_bytes / 2**30, 2)}
        if t.fit is not None:
            row.update({"fits": "yes" if t.fit.fits else "no", "n_gpu_layers": t.fit.n_gpu_layers,
                        "max ctx": t.fit.max_ctx, "GPU GiB": round(t.fit.gpu_bytes / 2**30, 2)})
            if len(t.fit.split) > 1:
                row["split"] = "/".join(map(str, t.fit.split))
        if est.totals:
            row["with draft GiB"] = round(next(x.total_bytes for x in est.totals if x.type == t.type) / 2**30, 2)
        rows.append(row)
    stdout.print(pd.DataFrame(rows).to_string(index=False), markup=False, highlight=False)
    if est.draft is not None:
        show_draft(est)
    if not est.header_exact:
        stdout.print("(file sizes include an estimated header: the tokenizer is not known from a config)",
                     markup=False, highlight=False)
    if tensors:
        for t in est.types:
            frame = pd.DataFrame([{"tensor": p.name, "shape": "x".join(map(str, p.shape)), "type": p.type,
                                   "bytes": p.n_bytes} for p in t.tensors])
            stdout.print(f"\n{t.type}", markup=False, highlight=False)
            stdout.print(frame.to_string(index=False), markup=False, highlight=False)


def show_draft(est: MemoryEstimate) -> None:
    """The draft's line: its weights and runtime memory at the target's context, and where it goes with --vram."""
    d = est.draft
    (t,) = d.types
    line = (f"draft {d.name} ({d.architecture}, {d.n_layer} layers) from {d.target}, {t.type}: weights "
            f"{_gib(t.weights_bytes)} GiB, KV cache {_gib(t.kv_bytes)} GiB, compute buffer {_gib(t.compute_bytes)} "
            f"GiB, total {_gib(t.total_bytes)} GiB")
    if t.fit is not None:
        line += (f"; on the GPU first ({t.fit.n_gpu_layers} layers, {_gib(t.fit.gpu_bytes)} GiB), the target's fit "
                 f"counts it" if t.fit.n_gpu_layers else "; it does not fit the GPU whole: it stays on the CPU")
    stdout.print(line, markup=False, highlight=False)
