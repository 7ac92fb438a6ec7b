"""A pool of threads that encode tensors a chunk of rows at a time and write each chunk at its own offset in the
output (os.pwrite), so that the cores share the numpy work (which releases the GIL) and reading, encoding and
writing overlap. At most two chunks per thread are queued or running, so memory stays bounded however large
the model; the pool's threads are joined before the output is renamed into place or removed."""
from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..errors import InvalidArgumentError, OutputError
from .tensors import ConvertedTensor

log = logging.getLogger(__name__)

_QUEUED_PER_THREAD = 2  # one running, one ready to start


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ChunkPool:
    """`write(plan, pos)` hands a tensor's chunks to the threads; `advance(n)` is called on the caller's thread
    with the bytes of each chunk written, in order; `wait()` returns once every chunk is on disk (or raises the
    first error a thread met)."""

    def __init__(self, fd: int, threads: int | None, advance: Callable[[int], object]):
        self.threads = default_threads() if threads is None else threads
        if self.threads < 1:
            raise InvalidArgumentError(f"threads must be at least 1, not {self.threads}", hint="pass --threads 1 or more")
        self._fd = fd
        self._advance = advance
        self._queued: deque[tuple[Future, int]] = deque()
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="quantkit-encode")
        log.debug("encoding on %d thread(s)", self.threads)

    def write(self, plan: ConvertedTensor, pos: int, *, count: bool = True) -> None:
        """Encode `plan` into the output at byte `pos`; `count`: report its bytes to `advance`."""
        row_bytes = plan.n_bytes // plan.n_rows if plan.n_rows else 0
        for start, stop in plan.chunks():
            while len(self._queued) >= _QUEUED_PER_THREAD * self.threads:
                self._finish_oldest()
            n = (stop - start) * row_bytes
            future = self._executor.submit(_write_chunk, self._fd, plan, start, stop, pos + start * row_bytes, n)
            self._queued.append((future, n if count else 0))

    def wait(self) -> None:
        while self._queued:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        future, n = self._queued.popleft()
        future.result()
        if n:
            self._advance(n)

    def close(self) -> None:
        """Drop the chunks not started, and join the threads (those running finish their chunk first)."""
        for future, _ in self._queued:
            future.cancel()
        self._queued.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ChunkPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_chunk(fd: int, plan: ConvertedTensor, start: int, stop: int, pos: int, expected: int) -> None:
    data = memoryview(np.ascontiguousarray(plan.encode(start, stop)).reshape(-1).view(np.uint8))
    if len(data) != expected:  # a bug, never a user error: refuse to leave a wrong file
        raise OutputError(f"tensor {plan.name}: rows {start}:{stop} came to {len(data)} bytes, expected {expected}",
                          hint="report it")
    while data:
        n = os.pwrite(fd, data, pos)
        data = data[n:]
        pos += n
