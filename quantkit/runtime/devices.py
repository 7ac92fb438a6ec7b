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
    name: str  # what reports show: the GPU's description, or an RPC device's endpoint
    kind: str  # "gpu", "rpc" or "cpu"
    memory_total: int | None = None
    memory_free: int | None = None
    id: str = ""  # ggml's device name (CUDA0, RPC1 …), as libllama's log names it


def supports_gpu_offload() -> bool:
    """Whether this build of llama.cpp can offload layers (a GPU backend, or the RPC backend)."""
    return bool(lib().llama_supports_gpu_offload())


def gpu_devices() -> list[Device]:
    """The devices libllama offloads layers to (GPUs of its ggml backends, and RPC servers added to them)."""
    if not supports_gpu_offload():
        return []
    try:
        return all_devices()
    except (OSError, AttributeError) as e:  # symbols differ between ggml versions: say what we know
        log.debug("cannot enumerate ggml devices: %s", e)
        return [Device("GPU (offload supported)", "gpu")]


def all_devices() -> list[Device]:
    """Every non-CPU device in ggml's backend registry, in registry order."""
    g = _typed(ggml())
    devices = []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        kind = g.ggml_backend_dev_type(dev)
        if kind in (_CPU, _ACCEL):
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        backend = g.ggml_backend_reg_name(g.ggml_backend_dev_backend_reg(dev)).decode(errors="replace")
        devices.append(Device(g.ggml_backend_dev_description(dev).decode(errors="replace"),
                              "rpc" if backend == "RPC" else "gpu", total.value, free.value,
                              g.ggml_backend_dev_name(dev).decode(errors="replace")))
    return devices


_CPU, _ACCEL = 0, 3  # ggml_backend_dev_type: CPU, GPU, IGPU, ACCEL


def _typed(g: ctypes.CDLL) -> ctypes.CDLL:
    g.ggml_backend_dev_count.restype = ctypes.c_size_t
    g.ggml_backend_dev_get.restype = ctypes.c_void_p
    g.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    g.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    for name in ("ggml_backend_dev_description", "ggml_backend_dev_name"):
        getattr(g, name).restype = ctypes.c_char_p
        getattr(g, name).argtypes = [ctypes.c_void_p]
    g.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    g.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    g.ggml_backend_reg_name.restype = ctypes.c_char_p
    g.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    g.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                          ctypes.POINTER(ctypes.c_size_t)]
    return g


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
