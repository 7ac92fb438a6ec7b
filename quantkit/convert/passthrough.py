"""Tensors whose bytes in the checkpoint already are the GGUF's (a bf16 weight kept bf16, an f16 kept f16): the
kernel copies them from file to file (copy_file_range, as `cp` does), and no Python process touches the data.

One exception keeps the bytes equal to llama.cpp's converter, which rounds bf16 through float32: a signalling
NaN comes out with its quiet bit set. So the bf16 sources are scanned for NaNs by a second thread while the
main thread builds the metadata and copies; a tensor found to hold a NaN (never, in a healthy checkpoint) is
written again, quieted, before the file is renamed into place.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointTensor

log = logging.getLogger(__name__)

_SCAN_BYTES = 4 << 20  # a chunk that stays in cache while it is scanned
# Four bf16 values per uint64 lane: masking the exponent and adding 0x80 carries into bit 15 of a value
# exactly when its exponent is all ones (Inf or NaN), and never into its neighbour.
_EXPONENT, _CARRY, _TOP = (np.uint64(0x7F807F807F807F80), np.uint64(0x0080008000800080),
                           np.uint64(0x8000800080008000))
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}


def has_signalling_nan(values: np.ndarray) -> bool:
    """Whether bf16 bits (uint16) hold a NaN without its quiet bit."""
    return bool(np.any(((values & 0x7FC0) == 0x7F80) & ((values & 0x003F) != 0)))


def _chunk_needs_quieting(chunk: np.ndarray, lanes: np.ndarray) -> bool:
    whole = chunk.size - chunk.size % 4
    if whole:
        t = lanes[: whole // 4]
        np.bitwise_and(chunk[:whole].view(np.uint64), _EXPONENT, out=t)
        np.add(t, _CARRY, out=t)
        np.bitwise_and(t, _TOP, out=t)
        if t.any() and has_signalling_nan(chunk[:whole]):
            return True
    return has_signalling_nan(chunk[whole:])


def needs_quieting(info: CheckpointTensor, stop: threading.Event | None = None) -> bool:
    """Whether the bf16 tensor `info` holds a signalling NaN, read a cache-sized chunk at a time (read, not
    mapped, so the scan adds nothing to the process's resident memory)."""
    buffer = np.empty(_SCAN_BYTES // 2, dtype=np.uint16)
    lanes = np.empty(buffer.size // 4, dtype=np.uint64)
    left = info.n_bytes
    with open(info.file, "rb", buffering=0) as f:
        f.seek(info.offset)
        while left > 0:
            if stop is not None and stop.is_set():
                return False
            n = f.readinto(memoryview(buffer).cast("B")[:min(left, _SCAN_BYTES)])
            if not n:
                raise OSError(errno.EIO, f"{info.file} ended before tensor {info.name} did")
            if _chunk_needs_quieting(buffer[: n // 2], lanes):
                return True
            left -= n
    return False


class NaNScan:
    """Scans the bf16 tensors in a background thread, in order; `needs_quieting(info)` waits for one's answer."""

    def __init__(self, tensors: list[CheckpointTensor]):
        self._futures: dict[tuple[Path, int], Future] = {(t.file, t.offset): Future() for t in tensors}
        self._tensors = tensors
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="quantkit-nan-scan", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for t in self._tensors:
            future = self._futures[(t.file, t.offset)]
            if self._stop.is_set():
                future.cancel()
                continue
            try:
                future.set_result(needs_quieting(t, self._stop))
            except BaseException as e:  # handed to the main thread, which raises it
                future.set_exception(e)

    def needs_quieting(self, info: CheckpointTensor) -> bool:
        return self._futures[(info.file, info.offset)].result()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "NaNScan":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def copy_range(info: CheckpointTensor, fd_out: int, out_offset: int) -> bool:
    """Copy the tensor's bytes into `fd_out` at `out_offset` inside the kernel. False where the system cannot
    (another OS, an old kernel across file systems): the caller then writes the bytes itself."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return False
    done = 0
    with open(info.file, "rb") as src:
        while done < info.n_bytes:
            try:
                n = copy(src.fileno(), fd_out, info.n_bytes - done, info.offset + done, out_offset + done)
            except OSError as e:
                if done == 0 and e.errno in _NO_COPY_RANGE:
                    log.debug("copy_file_range unavailable (%s); writing through Python", e.strerror)
                    return False
                raise
            if n == 0:
                raise OSError(errno.EIO, f"{info.file} ended before tensor {info.name} did")
            done += n
    return True
