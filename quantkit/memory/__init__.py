"""`estimate-memory`: what a model needs per quant type, before anything is downloaded.

Weights are computed tensor by tensor with libllama's own per-tensor type choices (tensor_types), runtime memory
from llama.cpp's KV cache layout and a model of its compute buffers (buffers), and the GPU fit from how llama.cpp
places layers. Pure computation: the only I/O is reading a config.json or a GGUF header (shapes, header).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from gguf import GGUF_DEFAULT_ALIGNMENT

from ..quant_types import LADDER
from ..gguf.header import padded, tensor_bytes
from .buffers import CTX_PAD, RuntimeMemory, placement, runtime_memory
from ..gguf.reader import GGUFFile
from .shapes import ModelSpec, resolve_target
from .tensor_types import DEFAULT_TYPE, QuantModel, choose_types, model_type_is_70b

log = logging.getLogger(__name__)

ALL_TYPES: tuple[str, ...] = (*LADDER, "F16", "BF16", "F32")
AS_WRITTEN = "as-written"  # a GGUF's own tensor types (a budget mix has no file type whose choices would say them)
GIB = 1 << 30
# What a CUDA/ROCm/Metal context, cuBLAS workspace and allocator slack take on the GPU besides the buffers.
GPU_OVERHEAD = 512 << 20

# A draft known by its shape only (a size label, a config) is counted at the type the recipes quantize drafts to.
DRAFT_TYPE = "Q4_0"
DRAFT_MAX_BATCH = 512  # the engine's draft context: n_batch min(--batch, 512), llama.cpp's default ubatch (512)

__all__ = ["AS_WRITTEN", "DRAFT_TYPE", "estimate_memory", "auto_gpu_layers", "auto_placement", "weights_plan",
           "MemoryEstimate", "TypeEstimate", "Total", "ALL_TYPES"]


@dataclass
class TensorEstimate:
    name: str
    shape: list[int]
    type: str
    n_bytes: int


@dataclass
class Fit:
    vram_bytes: list[int]
    fits: bool
    n_gpu_layers: int  # counting the output layer as llama.cpp does: n_layer + 1 = everything
    max_ctx: int  # the largest context (multiple of 256) that fits fully; 0 if none
    gpu_bytes: int
    cpu_bytes: int
    split: list[int]  # layers per GPU


@dataclass
class TypeEstimate:
    type: str
    n_params: int
    weights_bytes: int  # tensor data
    file_bytes: int  # the GGUF file: header + aligned tensor data
    bits_per_weight: float
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    total_bytes: int  # weights + KV + compute + output
    cpu_only_bytes: int  # token_embd, which llama.cpp keeps on the CPU
    fit: Fit | None = None
    tensors: list[TensorEstimate] = field(default_factory=list)


@dataclass
class Total:
    """A target type with its draft beside it: both models' weights and runtime memory, and the GPU they take
    (with --vram: the draft's share when it is offloaded, and the target's row's fit, which counts the draft)."""
    type: str
    total_bytes: int
    gpu_bytes: int | None = None


@dataclass
class MemoryEstimate:
    target: str
    source: str  # label | config | gguf | remote-gguf
    name: str
    architecture: str
    n_layer: int
    n_params: int
    n_ctx: int
    kv_type: str
    flash_attn: bool
    n_ubatch: int
    header_exact: bool
    runtime: RuntimeMemory
    types: list[TypeEstimate]
    draft: MemoryEstimate | None = None  # the speculative-decoding draft at the same context (one type row)
    totals: list[Total] = field(default_factory=list)  # per target type, with the draft (when there is one)


def _quant_model(spec: ModelSpec) -> QuantModel:
    return QuantModel(spec.arch, spec.n_layer, spec.n_head, spec.n_head_kv, spec.n_expert,
                      model_type_is_70b(spec.arch, spec.n_layer, spec.n_head, spec.n_head_kv, spec.n_expert))


def _output_header_bytes(spec: ModelSpec) -> int:
    """The header libllama writes: the source's key/values (split keys dropped, file_type and
    quantization_version set as u32) and one tensor info per tensor, padded to the alignment."""
    infos = sum(8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for t in spec.tensors)
    new_keys = {"general.file_type", "general.quantization_version"}
    if spec.header is not None:
        kv = sum(n for k, n in spec.header.kv_bytes.items() if k not in new_keys and not k.startswith("split."))
        kv += sum(8 + len(k) + 4 + 4 for k in new_keys)
        return padded(24 + kv + infos, spec.header.alignment)
    return padded(spec.header_bytes_estimate + infos, GGUF_DEFAULT_ALIGNMENT)


def weights_plan(spec: ModelSpec, qtype: str, has_imatrix: bool | None = None) -> list[TensorEstimate]:
    """Every tensor's type and size in a `qtype` file. `has_imatrix` (a few of libllama's choices depend on it)
    defaults to yes for the rungs an importance matrix opens (IQ types, Q2_K_S) and no for the others."""
    from ..quant_types import is_imatrix_type

    if qtype == AS_WRITTEN:
        return _written_plan(spec)
    if has_imatrix is None:
        has_imatrix = is_imatrix_type(qtype)
    types = choose_types(_quant_model(spec), spec.tensors, qtype, has_imatrix)
    return [TensorEstimate(t.name, list(t.shape), types[t.name].name, tensor_bytes(types[t.name], t.shape))
            for t in spec.tensors]


def _written_plan(spec: ModelSpec) -> list[TensorEstimate]:
    from ..errors import InvalidArgumentError

    if spec.header is None:
        raise InvalidArgumentError(f"{spec.source} has no tensors written yet: {AS_WRITTEN} needs a GGUF file",
                                   hint="name a quant type, or estimate from a .gguf")
    return [TensorEstimate(t.name, list(t.shape), t.type.name, tensor_bytes(t.type, t.shape)) for t in spec.tensors]


def _type_estimate(spec: ModelSpec, qtype: str, rt: RuntimeMemory, with_tensors: bool) -> TypeEstimate:
    plan = weights_plan(spec, qtype)
    alignment = spec.header.alignment if spec.header else GGUF_DEFAULT_ALIGNMENT
    weights = sum(p.n_bytes for p in plan)
    if qtype == AS_WRITTEN and spec.header.file_size:
        file_bytes = spec.header.file_size
    else:
        file_bytes = _output_header_bytes(spec) + sum(padded(p.n_bytes, alignment) for p in plan)
    n_params = spec.n_params
    cpu_only = sum(p.n_bytes for p in plan if p.name == "token_embd.weight")
    return TypeEstimate(qtype, n_params, weights, file_bytes, round(8 * weights / n_params, 3), rt.kv_bytes,
                        rt.compute_bytes, rt.output_bytes, weights + rt.kv_bytes + rt.compute_bytes + rt.output_bytes,
                        cpu_only, tensors=plan if with_tensors else [])


def _fit(spec: ModelSpec, est: TypeEstimate, rt_args: dict, vram: list[int], overhead: int,
         beside: Callable[[int], int] | None = None) -> Fit:
    """The layers of `spec` that fit `vram`; `beside(n_ctx)`: the GPU bytes another model (a draft) takes there
    at that context, which the budget loses first."""
    sizes = {p.name: p.n_bytes for p in weights_plan(spec, est.type)}
    n_gpu = len(vram)
    budget = sum(vram) - overhead * (n_gpu - 1)  # every GPU pays for its own context

    def gpu_need(ngl: int, n_ctx: int) -> int:
        own = placement(spec, sizes, runtime_memory(spec, n_ctx, **rt_args), ngl, overhead).gpu_bytes
        return own + (beside(n_ctx) if beside else 0)

    n_ctx = rt_args_ctx = rt_args.pop("n_ctx")
    full = spec.n_layer + 1
    fits = gpu_need(full, n_ctx) <= budget
    ngl = full if fits else 0
    if not fits:
        lo, hi = 0, full  # the largest ngl that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if gpu_need(mid, n_ctx) <= budget:
                lo = mid
            else:
                hi = mid - 1
        ngl = lo
    max_ctx = 0
    lo, hi = 0, max(spec.max_context, rt_args_ctx) // CTX_PAD
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if gpu_need(full, mid * CTX_PAD) <= budget:
            lo = mid
        else:
            hi = mid - 1
    max_ctx = lo * CTX_PAD
    p = placement(spec, sizes, runtime_memory(spec, n_ctx, **rt_args), ngl, overhead)
    rt_args["n_ctx"] = n_ctx
    # llama.cpp's default split gives each GPU layers in proportion to its memory
    layers = min(ngl, spec.n_layer)
    split = [int(layers * v / sum(vram)) for v in vram]
    split[-1] += layers - sum(split)
    return Fit(vram, fits, ngl, max_ctx, p.gpu_bytes, p.cpu_bytes, split)


def estimate_memory(target: str | ModelSpec, types: list[str] | None = None, *, n_ctx: int = 4096,
                    kv_type: str = "f16", flash_attn: bool = True, n_batch: int = 2048, n_ubatch: int = 512,
                    vram_gib: list[float] | None = None, with_tensors: bool = False,
                    gpu_overhead: int = GPU_OVERHEAD, draft: str | ModelSpec | None = None) -> MemoryEstimate:
    """Memory needed by `target` (a size label, repo id, HF folder, GGUF path or URL) for each quant type; with a
    speculative-decoding `draft` (any such target: a GGUF as written, anything else at DRAFT_TYPE), the draft's
    own estimate at the same context and KV type, and both together (`totals`; with `vram_gib` the draft is
    placed first, wholly on the GPU if it fits there, and each target row's fit has what is left)."""
    spec = target if isinstance(target, ModelSpec) else resolve_target(target)
    types = list(types or ALL_TYPES)
    rt = runtime_memory(spec, n_ctx, kv_type, flash_attn, n_batch, n_ubatch)
    rows = [_type_estimate(spec, t, rt, with_tensors) for t in types]
    draft_est = beside = None
    if draft is not None:
        draft_est, beside = _draft_estimate(draft, n_ctx, kv_type, flash_attn, n_batch, vram_gib, with_tensors,
                                            gpu_overhead)
    if vram_gib:
        vram = [int(v * GIB) for v in vram_gib]
        for row in rows:
            args = dict(n_ctx=n_ctx, kv_type=kv_type, flash_attn=flash_attn, n_batch=n_batch, n_ubatch=n_ubatch)
            row.fit = _fit(spec, row, args, vram, gpu_overhead, beside)
    est = MemoryEstimate(spec.source, spec.kind, spec.name, spec.arch, spec.n_layer, spec.n_params, rt.n_ctx,
                         rt.kv_type, flash_attn, rt.n_ubatch, spec.header is not None, rt, rows)
    if draft_est is not None:
        est.draft = draft_est
        (d,) = draft_est.types
        est.totals = [Total(row.type, row.total_bytes + d.total_bytes,
                            row.fit.gpu_bytes + d.fit.gpu_bytes if row.fit else None) for row in rows]
    return est


def _resolve_draft(draft: str | Path | GGUFFile | ModelSpec) -> ModelSpec:
    """resolve_target, with an error that says it is about the draft."""
    from ..errors import QuantkitError

    try:
        return resolve_target(draft)
    except QuantkitError as e:
        e.message = f"the draft: {e.message}"
        e.args = (e.message,)
        raise


def _draft_estimate(draft: str | ModelSpec, n_ctx: int, kv_type: str, flash_attn: bool, n_batch: int,
                    vram_gib: list[float] | None, with_tensors: bool, gpu_overhead: int):
    """The draft's estimate as the engine runs it (its own context of n_ctx cells, batch ≤ 512) and, with
    `vram_gib`, the GPU bytes it takes beside the target at a context (None when it stays on the CPU: a draft
    that does not fit wholly is not offloaded, so that the target keeps the GPU)."""
    dspec = _resolve_draft(draft)
    dtype = AS_WRITTEN if dspec.header is not None else DRAFT_TYPE
    d_batch = min(n_batch, DRAFT_MAX_BATCH)
    est = estimate_memory(dspec, [dtype], n_ctx=n_ctx, kv_type=kv_type, flash_attn=flash_attn, n_batch=d_batch,
                          n_ubatch=d_batch, vram_gib=vram_gib, with_tensors=with_tensors, gpu_overhead=gpu_overhead)
    (row,) = est.types
    if row.fit is None:
        return est, None
    if not row.fit.fits:
        cpu = placement(dspec, {p.name: p.n_bytes for p in weights_plan(dspec, dtype)}, est.runtime, 0).cpu_bytes
        row.fit = Fit(row.fit.vram_bytes, False, 0, row.fit.max_ctx, 0, cpu, [0] * len(row.fit.vram_bytes))
        return est, None
    sizes = {p.name: p.n_bytes for p in weights_plan(dspec, dtype)}
    args = {"kv_type": kv_type, "flash_attn": flash_attn, "n_batch": d_batch, "n_ubatch": d_batch}
    row.fit.gpu_bytes -= gpu_overhead  # the process's GPU context is paid once, by the target
    full = dspec.n_layer + 1

    def beside(ctx: int) -> int:
        return placement(dspec, sizes, runtime_memory(dspec, ctx, **args), full).gpu_bytes

    return est, beside


def auto_gpu_layers(model: str | Path | GGUFFile | ModelSpec, n_ctx: int, vram_bytes: int, *, kv_type: str = "f16",
                    flash_attn: bool = True, n_batch: int = 2048, n_ubatch: int = 512,
                    gpu_overhead: int = GPU_OVERHEAD) -> int:
    """`--n-gpu-layers auto`: how many layers of the GGUF `model` (a path, or a GGUFFile already read) to
    offload so that weights, KV cache and compute buffers fit in `vram_bytes` (quantkit.runtime.offload passes
    the GPU's free memory)."""
    spec = resolve_target(model)
    qtype = spec.file_type if spec.file_type in DEFAULT_TYPE else "F16"
    est = estimate_memory(spec, [qtype], n_ctx=n_ctx, kv_type=kv_type, flash_attn=flash_attn, n_batch=n_batch,
                          n_ubatch=n_ubatch, vram_gib=[vram_bytes / GIB], gpu_overhead=gpu_overhead)
    return est.types[0].fit.n_gpu_layers


def auto_placement(model: str | Path | GGUFFile | ModelSpec, draft: str | Path | GGUFFile | ModelSpec, n_ctx: int,
                   vram_bytes: int, *, kv_type: str = "f16", flash_attn: bool = True, n_batch: int = 2048,
                   n_ubatch: int = 512, gpu_overhead: int = GPU_OVERHEAD) -> tuple[int, int]:
    """`--n-gpu-layers auto` with a draft model: (the target's layers, the draft's). The draft goes first, wholly,
    if it fits in `vram_bytes` (llama-server's -ngld all); the target then gets what fits in the rest. A draft
    that does not fit wholly stays on the CPU and the target has the whole GPU."""
    spec, dspec = resolve_target(model), _resolve_draft(draft)
    qtype = spec.file_type if spec.file_type in DEFAULT_TYPE else "F16"
    est = estimate_memory(spec, [qtype], n_ctx=n_ctx, kv_type=kv_type, flash_attn=flash_attn, n_batch=n_batch,
                          n_ubatch=n_ubatch, vram_gib=[vram_bytes / GIB], gpu_overhead=gpu_overhead, draft=dspec)
    return est.types[0].fit.n_gpu_layers, est.draft.types[0].fit.n_gpu_layers
