"""Loading libllama (llama-cpp-python's ctypes bindings) once, with llama.cpp's log routed to Python logging.

One log callback is installed for the life of the process. `capture()` collects the lines logged while a block
runs (quantize reads libllama's reason for a failure from them); nothing is ever handed back to llama-cpp-python's
own callback, which prints to stderr.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

llama_log = logging.getLogger("quantkit.llama_cpp")

# ggml_log_level (NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5) → logging level. llama.cpp's warnings are
# mostly advice for its own CLI ("n_ctx_seq < n_ctx_train"), so they stay below the default level; its errors
# become our warnings (what failed reaches the user as a typed error).
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
_CONT = 5


class _LogRouter:
    """Joins llama.cpp's log pieces into lines; each line goes to `quantkit.llama_cpp` and to every capture."""

    def __init__(self) -> None:
        self.level = logging.DEBUG
        self.partial = ""
        self.sinks: list[list[str]] = []
        self.quiet = 0  # captures under way whose caller reports what failed: their lines log at INFO at most
        self.lock = threading.Lock()
        self.callback = None  # kept referenced: llama.cpp holds only the raw pointer

    def __call__(self, level: int, text: bytes, user_data) -> None:
        with self.lock:
            if level != _CONT:
                self.level = _LEVELS.get(level, logging.DEBUG)
            self.partial += text.decode("utf-8", errors="replace")
            if "\n" not in self.partial:
                return
            *lines, self.partial = self.partial.split("\n")
            sinks = list(self.sinks)
            level = min(self.level, logging.INFO) if self.quiet else self.level
        for line in lines:
            line = line.rstrip()
            if not line:
                continue
            llama_log.log(level, "%s", line)
            for sink in sinks:
                sink.append(line)

    def flush_into(self, lines: list[str]) -> None:
        with self.lock:
            if self.partial.strip():
                lines.append(self.partial.rstrip())
            self.partial = ""


_router = _LogRouter()
_module = None


def lib():
    """The llama_cpp bindings module, imported once, its log routed and its backend initialised."""
    global _module
    if _module is None:
        import llama_cpp

        _router.callback = llama_cpp.llama_log_callback(_router)
        llama_cpp.llama_log_set(_router.callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _module = llama_cpp
    return _module


@contextlib.contextmanager
def capture(quiet: bool = False) -> Iterator[list[str]]:
    """Collect libllama's log lines while the block runs (they also reach Python logging). Blocks may nest.
    `quiet`: the caller turns a failure into a typed error that carries libllama's reason, so libllama's errors
    log at INFO (shown with -v) instead of as warnings that would repeat it on stderr."""
    lib()
    lines: list[str] = []
    with _router.lock:
        _router.sinks.append(lines)
        _router.quiet += quiet
    try:
        yield lines
    finally:
        _router.flush_into(lines)
        with _router.lock:
            _router.sinks.remove(lines)
            _router.quiet -= quiet


_ggml = None
_ggml_lock = threading.Lock()


def ggml():
    """libggml of the same build (device enumeration, tensor access in eval callbacks): beside the libllama
    llama-cpp-python loaded, its own or the one `LLAMA_CPP_LIB_PATH` names."""
    global _ggml
    with _ggml_lock:  # one handle: functions' ctypes signatures are set on it
        if _ggml is None:
            _ggml = ctypes.CDLL(str(Path(lib().llama_cpp._base_path) / "libggml.so"))
    return _ggml
