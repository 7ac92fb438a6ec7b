"""One thread computes every llama.cpp graph of the process.

ggml's CPU backend runs each graph in an OpenMP parallel region, and libgomp keeps a pool of worker threads for
every thread that opens one. Two engines (each on a thread of its own), or a router's two models, make two pools
and more threads than cores; libgomp then all but stops spinning between regions (its "throttled" mode) and
every decode waits for its workers to wake: on 2 cores a second, idle engine beside took a third off the first
one's speed (SmolLM2 F16, greedy: 124–133 → 85–88 tok/s). Decoding on this one thread keeps one pool, whoever
asks; the asking thread waits for the answer (its GIL released, as it was during the call itself)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
THREAD_NAME = "quantkit-compute"

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix=THREAD_NAME)
        return _executor


def on_compute_thread(fn: Callable[..., T], *args) -> T:
    """fn(*args) on the compute thread (at once when called from it), its exception raised here."""
    if threading.current_thread().name.startswith(THREAD_NAME):
        return fn(*args)
    return _pool().submit(fn, *args).result()
