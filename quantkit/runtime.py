"""The one place that opens llama.cpp: model loading, context creation, GPU offload, threads and llama.cpp's log.

Everything above this module speaks numpy and Python types; only here do ctypes pointers appear. A `Model` and a
`Context` own their llama.cpp objects and free them on `close()` (both are context managers).

    with load_model(path, n_gpu_layers="auto", n_ctx=512) as model, \
         create_context(model, n_ctx=2048, n_batch=2048, n_seq_max=4, threads=8) as ctx:
        ctx.decode(batch)
"""
from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import gguf_file
from .errors import InvalidArgumentError, QuantkitError, RuntimeLoadError

log = logging.getLogger(__name__)
llama_log = logging.getLogger("quantkit.llama_cpp")

# ggml_log_level (NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5) → logging level. llama.cpp's warnings are
# mostly advice for its own CLI ("n_ctx_seq < n_ctx_train"), so they stay below the default level; its errors
# become our warnings (what failed reaches the user as a typed error).
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
_CONT = 5


def _llama_cpp():
    """Import llama_cpp once, with its log routed to Python logging (it prints to stderr otherwise)."""
    import llama_cpp

    _route_log(llama_cpp)
    return llama_cpp


_log_state: dict = {"callback": None, "level": logging.DEBUG, "line": ""}


def _route_log(llama_cpp) -> None:
    if _log_state["callback"] is not None:
        return

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != _CONT:
            _log_state["level"] = _LEVELS.get(level, logging.DEBUG)
        _log_state["line"] += text.decode("utf-8", errors="replace")
        if _log_state["line"].endswith("\n"):
            line, _log_state["line"] = _log_state["line"].rstrip(), ""
            if line:
                llama_log.log(_log_state["level"], "%s", line)

    _log_state["callback"] = callback  # kept referenced: llama.cpp holds only the raw pointer
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


# ---- threads and devices -----------------------------------------------------------------------------------

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


def gpu_devices() -> list[Device]:
    """The GPU devices of the ggml backends llama.cpp was built with (none for a CPU build)."""
    llama_cpp = _llama_cpp()
    if not llama_cpp.llama_supports_gpu_offload():
        return []
    try:
        ggml = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so"))
        return list(_ggml_gpus(ggml))
    except (OSError, AttributeError) as e:  # symbols differ between ggml versions: say what we know
        log.debug("cannot enumerate ggml devices: %s", e)
        return [Device("GPU (offload supported)", "gpu")]


def _ggml_gpus(ggml: ctypes.CDLL):
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_description.restype = ctypes.c_char_p
    ggml.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                             ctypes.POINTER(ctypes.c_size_t)]
    cpu_type = 0  # GGML_BACKEND_DEVICE_TYPE_CPU; GPU, IGPU and ACCEL follow
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        if ggml.ggml_backend_dev_type(dev) == cpu_type:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        yield Device(ggml.ggml_backend_dev_description(dev).decode(errors="replace"), "gpu", total.value, free.value)


def describe_device(threads: int | None = None) -> str:
    """One line for reports: the GPU and its memory when llama.cpp can offload, else "CPU, N threads"."""
    gpus = gpu_devices()
    if gpus:
        return "; ".join(f"{d.name}, {d.memory_total / 2**30:.1f} GiB" if d.memory_total else d.name for d in gpus)
    return f"CPU, {threads or physical_cores()} threads"


# ---- GPU layers ---------------------------------------------------------------------------------------------

ALL_LAYERS = -1  # libllama: a negative n_gpu_layers offloads every layer and the output layer


def resolve_gpu_layers(spec: int | str, model_path: Path, n_ctx: int) -> int:
    """`--n-gpu-layers`: a number, 'all' (every layer and the output layer) or 'auto' (what fits in VRAM)."""
    if isinstance(spec, int) or str(spec).lstrip("-").isdigit():
        n = int(spec)
        if n < 0:
            raise InvalidArgumentError(f"--n-gpu-layers must be a number ≥ 0, 'all' or 'auto', not {n}")
        return n  # libllama clamps it to the model's layers
    spec = str(spec).lower()
    if spec == "all":
        return ALL_LAYERS
    if spec != "auto":
        raise InvalidArgumentError(f"--n-gpu-layers must be a number, 'all' or 'auto', not {spec!r}")
    if not _llama_cpp().llama_supports_gpu_offload():
        return 0
    from .memory import auto_gpu_layers

    return int(auto_gpu_layers(model_path, n_ctx))


def check_gguf_file(path: Path) -> None:
    """Validate the file (exists, GGUF magic, complete header and tensor data) before libllama sees a path,
    so that a bad file is a clear error rather than a libllama failure."""
    gguf_file.read_header(path)


# ---- model and context --------------------------------------------------------------------------------------

class Model:
    """A loaded llama.cpp model: its vocabulary, training context and tokenizer."""

    def __init__(self, path: Path, ptr, n_gpu_layers: int):
        llama_cpp = _llama_cpp()
        self.path = path
        self.ptr = ptr
        self.n_gpu_layers = n_gpu_layers
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(ptr))
        self.n_layer = int(llama_cpp.llama_model_n_layer(ptr))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))

    def tokenize(self, text: bytes, add_special: bool = True, parse_special: bool = False) -> np.ndarray:
        """Token ids (int32) of `text`, as llama.cpp's common_tokenize makes them."""
        llama_cpp = _llama_cpp()
        n_max = len(text) + 8
        out = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, text, len(text), out, n_max, add_special, parse_special)
        if n < 0:  # a tokenizer that makes more tokens than bytes: retry with the size it asked for
            n_max = -n
            out = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.vocab, text, len(text), out, n_max, add_special, parse_special)
        return np.frombuffer(out, dtype=np.int32, count=n).copy()

    @property
    def layers_on_gpu(self) -> int:
        """The layers libllama actually offloads (it clamps n_gpu_layers; -1 means all, the output layer counted)."""
        if self.n_gpu_layers == 0 or not _llama_cpp().llama_supports_gpu_offload():
            return 0
        everything = self.n_layer + 1
        return everything if self.n_gpu_layers < 0 else min(self.n_gpu_layers, everything)

    def meta_int(self, key: str) -> int | None:
        """An integer metadata value, read through libllama (no second parse of the file)."""
        buf = ctypes.create_string_buffer(64)
        n = _llama_cpp().llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        try:
            return int(buf.value.decode()) if n >= 0 else None
        except ValueError:
            return None

    def token_texts(self) -> list[bytes]:
        """Every token's text, in id order."""
        llama_cpp = _llama_cpp()
        return [llama_cpp.llama_vocab_get_text(self.vocab, i) for i in range(self.n_vocab)]

    def close(self) -> None:
        if self.ptr is not None:
            _llama_cpp().llama_model_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_vocabulary(path: str | Path) -> Model:
    """Only the tokenizer of a GGUF file (libllama's vocab_only load: no weights read)."""
    path = Path(path)
    check_gguf_file(path)
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    ptr = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
    if not ptr:
        raise RuntimeLoadError(f"llama.cpp could not read the vocabulary of {path}", hint=_see_log)
    return Model(path, ptr, 0)


def extra_buffers_default() -> bool:
    """Whether to let ggml use its CPU "extra" buffer types (weight repacking, AMX).

    Off when the CPU backend was built with AMX: in the llama-cpp-python 0.3.36 wheel ggml's AMX matmul
    (ggml_backend_amx_mul_mat) crashes with SIGSEGV on the first decode on AMX CPUs. llama.cpp's `--no-repack`
    is the same switch. QUANTKIT_EXTRA_BUFFERS=1 or 0 overrides the choice."""
    forced = os.environ.get("QUANTKIT_EXTRA_BUFFERS")
    if forced in ("0", "1"):
        return forced == "1"
    return b"AMX_INT8 = 1" not in _llama_cpp().llama_print_system_info()


def load_model(path: str | Path, n_gpu_layers: int | str = "auto", n_ctx: int = 4096,
               extra_buffers: bool | None = None) -> Model:
    """Load a GGUF model through libllama; `n_ctx` only informs the 'auto' offload estimate."""
    path = Path(path)
    check_gguf_file(path)
    layers = resolve_gpu_layers(n_gpu_layers, path, n_ctx)
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = layers
    params.use_extra_bufts = extra_buffers_default() if extra_buffers is None else extra_buffers
    if not params.use_extra_bufts:
        log.info("ggml extra buffer types (repack, AMX) off")
    ptr = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
    if not ptr:
        raise RuntimeLoadError(f"llama.cpp could not load {path}", hint=_see_log)
    log.info("loaded %s (n_gpu_layers %d)", path.name, layers)
    return Model(path, ptr, layers)


_see_log = "run with -v to see llama.cpp's log; the architecture or a tensor type may be newer than this libllama"


class Context:
    """A llama.cpp context: a KV cache for `n_seq_max` sequences sharing `n_ctx` cells, and the decode call."""

    def __init__(self, model: Model, ptr, n_ctx: int, n_batch: int, n_seq_max: int, threads: int):
        self.model = model
        self.ptr = ptr
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.threads = threads

    def clear(self) -> None:
        """Forget every sequence (the KV cache's contents)."""
        llama_cpp = _llama_cpp()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ptr), True)

    def decode(self, batch: "Batch") -> None:
        code = _llama_cpp().llama_decode(self.ptr, batch.raw)
        if code != 0:
            raise RuntimeLoadError(f"llama_decode failed with code {code} on a batch of {batch.n_tokens} tokens",
                                   hint=_see_log)

    def output_logits(self, n_outputs: int) -> np.ndarray:
        """The logits of the last decode's output rows, (n_outputs, n_vocab) float32, in batch order.
        A view of llama.cpp's buffer: valid until the next decode."""
        ptr = _llama_cpp().llama_get_logits(self.ptr)
        return np.ctypeslib.as_array(ptr, shape=(n_outputs, self.model.n_vocab))

    def close(self) -> None:
        if self.ptr is not None:
            _llama_cpp().llama_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def create_context(model: Model, n_ctx: int, n_batch: int | None = None, n_ubatch: int | None = None,
                   n_seq_max: int = 1, threads: int | None = None) -> Context:
    """A context of `n_ctx` cells in all (each of `n_seq_max` sequences gets n_ctx / n_seq_max)."""
    llama_cpp = _llama_cpp()
    threads = threads or physical_cores()
    n_batch = min(n_batch or n_ctx, n_ctx)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = min(n_ubatch or params.n_ubatch, n_batch)
    params.n_seq_max = n_seq_max
    params.n_threads = threads
    params.n_threads_batch = threads
    params.no_perf = True
    ptr = llama_cpp.llama_init_from_model(model.ptr, params)
    if not ptr:
        raise RuntimeLoadError(f"llama.cpp could not create a context of {n_ctx} tokens for {model.path.name}",
                               hint="try a smaller --ctx or --batch, or fewer --n-gpu-layers")
    return Context(model, ptr, n_ctx, n_batch, n_seq_max, threads)


class Batch:
    """A llama_batch filled from numpy arrays: one sequence id per token, output flags where logits are wanted."""

    def __init__(self, capacity: int):
        self._llama_cpp = _llama_cpp()
        self.capacity = capacity
        self.raw = self._llama_cpp.llama_batch_init(capacity, 0, 1)
        self.n_tokens = 0

    def set(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, outputs: np.ndarray) -> None:
        n = len(tokens)
        if n > self.capacity:
            raise QuantkitError(f"batch of {n} tokens exceeds its capacity of {self.capacity}")
        raw = self.raw
        np.ctypeslib.as_array(raw.token, shape=(n,))[:] = tokens
        np.ctypeslib.as_array(raw.pos, shape=(n,))[:] = pos
        np.ctypeslib.as_array(raw.n_seq_id, shape=(n,))[:] = 1
        np.ctypeslib.as_array(raw.logits, shape=(n,))[:] = outputs.astype(np.int8)
        for i, s in enumerate(seq.tolist()):
            raw.seq_id[i][0] = s
        raw.n_tokens = n
        self.n_tokens = n

    def close(self) -> None:
        if self.raw is not None:
            self._llama_cpp.llama_batch_free(self.raw)
            self.raw = None

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
