"""`--n-gpu-layers` and `--rpc`: how many layers to offload, to which devices, and loading a model with that choice.

It joins two things that must not know each other: the pure memory model (memory.auto_gpu_layers answers
"what fits in this many bytes") and the runtime (what the GPU has free, and the loading itself). The RPC servers
a load offloads to are a parameter of the load: they are registered with ggml when a load first asks for them.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .. import runtime
from ..errors import InvalidArgumentError
from ..gguf.reader import GGUFFile, read_gguf
from ..memory import auto_gpu_layers, auto_placement
from ..memory.layers import plan_layers

log = logging.getLogger(__name__)


def rpc_devices(rpc: list[str] | None) -> list[runtime.Device]:
    """The devices of the `ggml-rpc-server` hosts `rpc` (HOST:PORT each), registered with ggml for the rest of
    the process if they are not yet (nothing when None or empty)."""
    if not rpc:
        return []
    return runtime.add_rpc_servers(list(rpc))


def resolve_gpu_layers(spec: int | str, model: str | Path | GGUFFile, n_ctx: int,
                       rpc: list[str] | None = None) -> int:
    """A number, 'all' (every layer and the output layer) or 'auto' (what fits in the free memory of the first
    offload device — an RPC server of `rpc` first, as libllama orders them — at `n_ctx`; 0 on a build without
    GPU offload) → libllama's n_gpu_layers. `model`: a path, or a GGUFFile already read (not read again)."""
    rpc_devices(rpc)
    if isinstance(spec, int) or str(spec).lstrip("-").isdigit():
        n = int(spec)
        if n < 0:
            raise InvalidArgumentError(f"--n-gpu-layers must be a number ≥ 0, 'all' or 'auto', not {n}")
        return n  # libllama clamps it to the model's layers
    spec = str(spec).lower()
    if spec == "all":
        return runtime.ALL_LAYERS
    if spec != "auto":
        raise InvalidArgumentError(f"--n-gpu-layers must be a number, 'all' or 'auto', not {spec!r}")
    free = _free_memory()
    return 0 if free is None else int(auto_gpu_layers(model, n_ctx, free))


def _free_memory() -> int | None:
    """The free memory of the first offload device, as libllama fills it; None on a build without one."""
    devices = runtime.gpu_devices()  # none on a CPU build, or on an RPC build with no server added
    if not devices:
        return None
    free = next((d.memory_free for d in devices if d.memory_free), None)
    if free is None:
        log.warning("cannot tell the GPU's free memory: offloading nothing")
    return free


def resolve_draft_gpu_layers(spec: int | str, model: str | Path | GGUFFile, draft: str | Path | GGUFFile, n_ctx: int,
                             rpc: list[str] | None = None) -> tuple[int, int]:
    """--n-gpu-layers for a target and its speculative-decoding draft: a number or 'all' goes to both; 'auto'
    places the draft first, wholly if it fits the free memory, and the target in what is left
    (memory.auto_placement)."""
    if str(spec).lower() != "auto":
        n = resolve_gpu_layers(spec, model, n_ctx, rpc)
        return n, n
    rpc_devices(rpc)
    free = _free_memory()
    return (0, 0) if free is None else auto_placement(model, draft, n_ctx, free)


def load_with_draft(path: str | Path | GGUFFile, draft: str | Path | GGUFFile, n_gpu_layers: int | str = "auto",
                    n_ctx: int = 4096, rpc: list[str] | None = None) -> tuple[runtime.Model, runtime.Model]:
    """The target and its draft loaded with --n-gpu-layers resolved for both (each header read once)."""
    model, draft_file = read_gguf(path), read_gguf(draft)
    ngl, draft_ngl = resolve_draft_gpu_layers(n_gpu_layers, model, draft_file, n_ctx, rpc)
    target = runtime.load_model(model, ngl)
    try:
        return target, runtime.load_model(draft_file, draft_ngl)
    except BaseException:
        target.close()
        raise


def load_model(path: str | Path | GGUFFile, n_gpu_layers: int | str = "auto", n_ctx: int = 4096,
               rpc: list[str] | None = None) -> runtime.Model:
    """Load a GGUF with `--n-gpu-layers` resolved at context size `n_ctx` (which informs only 'auto'), offloading
    to the RPC servers `rpc` (HOST:PORT each) too. The header is read once, here, for the check and for 'auto'."""
    model = read_gguf(path)
    return runtime.load_model(model, resolve_gpu_layers(n_gpu_layers, model, n_ctx, rpc))


def plan_placement(n_layer: int, n_gpu_layers: int | str, model: str | Path | GGUFFile, n_ctx: int,
                   rpc: list[str] | None = None) -> list[str]:
    """Where libllama will put each layer (the output layer last) with the devices registered now and the RPC
    servers `rpc`."""
    ngl = resolve_gpu_layers(n_gpu_layers, model, n_ctx, rpc)
    devices = [(d.id or d.name, d.memory_free or 0) for d in runtime.gpu_devices()]
    return plan_layers(n_layer, ngl, devices)
