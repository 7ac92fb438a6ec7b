"""What llama.cpp can run on: CPU threads, the GPUs of its ggml backends, and CPU features that need care."""
from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ._lib import ggml, lib

log = logging.getLogger(__name__)


def physical_cores() -> int:
    """Physical cores this process may run on (llama.cpp's default thread count), hyper-threads not counted."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    siblings = set()
    for cpu in allowed:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            siblings.add(path.read_text().strip())
        except OSError:
            return len(allowed)
    return max(1, len(siblings))


@dataclass(frozen=True)
class Device:
    name: str
    kind: str  # "gpu" or "cpu"
    memory_total: int | None = None
    memory_free: int | None = None


def supports_gpu_offload() -> bool:
    """Whether this build of llama.cpp has a GPU backend (CUDA, ROCm, Metal, Vulkan …)."""
    return bool(lib().llama_supports_gpu_offload())


def gpu_devices() -> list[Device]:
    """The GPU devices of the ggml backends llama.cpp was built with (none for a CPU build)."""
    if not supports_gpu_offload():
        return []
    try:
        return list(_ggml_gpus(ggml()))
    except (OSError, AttributeError) as e:  # symbols differ between ggml versions: say what we know
        log.debug("cannot enumerate ggml devices: %s", e)
        return [Device("GPU (offload supported)", "gpu")]


def _ggml_gpus(g: ctypes.CDLL):
    g.ggml_backend_dev_count.restype = ctypes.c_size_t
    g.ggml_backend_dev_get.restype = ctypes.c_void_p
    g.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    g.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    g.ggml_backend_dev_description.restype = ctypes.c_char_p
    g.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
    g.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                          ctypes.POINTER(ctypes.c_size_t)]
    cpu_type = 0  # GGML_BACKEND_DEVICE_TYPE_CPU; GPU, IGPU and ACCEL follow
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        if g.ggml_backend_dev_type(dev) == cpu_type:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        yield Device(g.ggml_backend_dev_description(dev).decode(errors="replace"), "gpu", total.value, free.value)


def free_gpu_memory() -> int | None:
    """Free memory of the first GPU as llama.cpp's own backend reports it; None when it cannot be told."""
    free = [d.memory_free for d in gpu_devices() if d.memory_free]
    return free[0] if free else None


def describe_device(threads: int | None = None) -> str:
    """One line for reports: the GPU and its memory when llama.cpp can offload, else "CPU, N threads"."""
    gpus = gpu_devices()
    if gpus:
        return "; ".join(f"{d.name}, {d.memory_total / 2**30:.1f} GiB" if d.memory_total else d.name for d in gpus)
    return f"CPU, {threads or physical_cores()} threads"


def extra_buffers_default() -> bool:
    """Whether to let ggml use its CPU "extra" buffer types (weight repacking, AMX).

    Off when the CPU backend was built with AMX: in the llama-cpp-python 0.3.36 wheel ggml's AMX matmul
    (ggml_backend_amx_mul_mat) crashes with SIGSEGV on the first decode on AMX CPUs. llama.cpp's `--no-repack`
    is the same switch. QUANTKIT_EXTRA_BUFFERS=1 or 0 overrides the choice."""
    forced = os.environ.get("QUANTKIT_EXTRA_BUFFERS")
    if forced in ("0", "1"):
        return forced == "1"
    return b"AMX_INT8 = 1" not in lib().llama_print_system_info()
