"""Which device holds which layer: llama.cpp's default layer split, and a short line that describes a placement.

libllama gives the last `n_gpu_layers` of the model's n_layer + 1 layers (the output layer counts as the last)
to its offload devices — RPC servers first, then local GPUs — cutting them at the cumulative share of each
device's free memory (llama_model::load_tensors, split mode "layer", no --tensor-split). The rest stay on the CPU.
"""
from __future__ import annotations

from bisect import bisect_right

import numpy as np

CPU = "CPU"


def plan_layers(n_layer: int, n_gpu_layers: int, devices: list[tuple[str, int]]) -> list[str]:
    """The device of each of the n_layer + 1 layers for `devices` = [(name, free bytes)] in libllama's order;
    a negative `n_gpu_layers` offloads everything."""
    n_all = n_layer + 1
    ngl = n_all if n_gpu_layers < 0 else n_gpu_layers
    if not devices or ngl == 0:
        return [CPU] * n_all
    start = max(n_all - ngl, 0)
    active = min(ngl, n_all)
    # float32 running sums, as llama.cpp computes its split points
    sums = np.cumsum(np.array([free for _, free in devices], dtype=np.float32), dtype=np.float32)
    points = list(sums / sums[-1])
    placed = []
    for il in range(n_all):
        if il < start or il - start >= active:
            placed.append(CPU)
        else:
            at = np.float32(il - start) / np.float32(active)
            placed.append(devices[min(bisect_right(points, at), len(devices) - 1)][0])
    return placed


def describe(layer_devices: list[str]) -> str:
    """`layers 0-9 CPU · 10-20 RPC0 · 21-30 RPC1` (the output layer is the last number)."""
    runs: list[tuple[int, int, str]] = []
    for i, dev in enumerate(layer_devices):
        if runs and runs[-1][2] == dev:
            runs[-1] = (runs[-1][0], i, dev)
        else:
            runs.append((i, i, dev))
    parts = [f"{a}-{b} {dev}" if a != b else f"{a} {dev}" for a, b, dev in runs]
    return "layers " + " · ".join(parts) if parts else ""


def layer_counts(layer_devices: list[str]) -> dict[str, int]:
    """How many layers each device holds, in first-use order."""
    counts: dict[str, int] = {}
    for dev in layer_devices:
        counts[dev] = counts.get(dev, 0) + 1
    return counts


def remote_summary(layer_devices: list[str]) -> str | None:
    """The placement line when some layers live on RPC servers (None otherwise: "k/N layers on GPU" says it)."""
    return describe(layer_devices) if any(d.startswith("RPC") for d in layer_devices) else None
