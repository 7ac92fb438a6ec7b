"""`--n-gpu-layers`: how many layers to offload, and loading a model with that choice.

It joins two things that must not know each other: the pure memory model (memory.auto_gpu_layers answers
"what fits in this many bytes") and the runtime (what the GPU has free, and the loading itself).
"""
from __future__ import annotations

from pathlib import Path

from .. import runtime
from ..errors import InvalidArgumentError
from ..memory import auto_gpu_layers
from ..memory.layers import plan_layers


def resolve_gpu_layers(spec: int | str, model_path: str | Path, n_ctx: int) -> int:
    """A number, 'all' (every layer and the output layer) or 'auto' (what fits in the GPU's free memory at
    `n_ctx`; 0 on a build without GPU offload) → libllama's n_gpu_layers."""
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
    devices = runtime.gpu_devices()  # none on a CPU build, or on an RPC build with no server added
    if not devices:
        return 0
    free = next((d.memory_free for d in devices if d.memory_free), None)  # the first device's, as libllama fills it
    if free is None:
        import logging

        logging.getLogger(__name__).warning("cannot tell the GPU's free memory: offloading nothing")
        return 0
    return int(auto_gpu_layers(model_path, n_ctx, free))


def load_model(path: str | Path, n_gpu_layers: int | str = "auto", n_ctx: int = 4096) -> runtime.Model:
    """Load a GGUF with `--n-gpu-layers` resolved at context size `n_ctx` (which informs only 'auto')."""
    runtime.check_gguf_file(Path(path))
    return runtime.load_model(path, resolve_gpu_layers(n_gpu_layers, path, n_ctx))


def connect_rpc(spec: str | None) -> list[runtime.Device]:
    """`--rpc HOST:PORT[,…]`: add the remote servers' devices to the ones libllama offloads to (nothing when None)."""
    if not spec:
        return []
    return runtime.add_rpc_servers(runtime.parse_endpoints(spec))


def plan_placement(n_layer: int, n_gpu_layers: int | str, model_path: str | Path, n_ctx: int) -> list[str]:
    """Where libllama will put each layer (the output layer last) with the devices registered now."""
    ngl = resolve_gpu_layers(n_gpu_layers, model_path, n_ctx)
    devices = [(d.id or d.name, d.memory_free or 0) for d in runtime.gpu_devices()]
    return plan_layers(n_layer, ngl, devices)
