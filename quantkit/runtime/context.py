"""A llama.cpp context: the KV cache of one or more sequences, the decode call, and per-sequence memory edits."""
from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from ..errors import RuntimeLoadError
from ..resources import Closeable
from ._lib import lib
from .batch import Batch
from .compute import on_compute_thread
from .devices import physical_cores
from .model import SEE_LOG, Model

# An eval callback, as libllama's scheduler calls it for every graph node: (ggml_tensor pointer, ask) → bool.
# With ask=True it answers whether it wants to see that node's data; with ask=False the data is computed and it
# returns whether to go on. The imatrix collector uses it.
EvalCallback = Callable[[int, bool], bool]

NO_KV_SLOT = 1  # llama_decode: no room in the KV cache for the batch (nothing was computed)


class KVCacheFullError(RuntimeLoadError):
    hint = "use a larger --ctx, or fewer sequences at once"


class Context(Closeable):
    """A KV cache for `n_seq_max` sequences sharing `n_ctx` cells (`kv_unified`: any sequence may use any cell;
    otherwise each gets n_ctx / n_seq_max), and the decode call."""

    def __init__(self, model: Model, ptr, n_ctx: int, n_batch: int, n_seq_max: int, threads: int, keep: tuple = ()):
        llama_cpp = lib()
        self.model = model
        self.ptr = ptr
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.threads = threads
        self._memory = llama_cpp.llama_get_memory(ptr)
        self._decode = llama_cpp.llama_decode
        self._keep = keep  # ctypes callbacks libllama holds raw pointers to

    def decode(self, batch: Batch) -> None:
        """Evaluate the batch; KVCacheFullError when the cache has no room for it (nothing was computed)."""
        code = on_compute_thread(self._decode, self.ptr, batch.raw)
        if code == NO_KV_SLOT:
            raise KVCacheFullError(f"the KV cache of {self.n_ctx} cells has no room for {batch.n_tokens} more tokens")
        if code != 0:
            raise RuntimeLoadError(f"llama_decode failed with code {code} on a batch of {batch.n_tokens} tokens",
                                   hint=SEE_LOG)

    def synchronize(self) -> None:
        lib().llama_synchronize(self.ptr)

    def output_logits(self, n_outputs: int) -> np.ndarray:
        """The logits of the last decode's output rows, (n_outputs, n_vocab) float32, in batch order.
        A view of llama.cpp's buffer: valid until the next decode."""
        ptr = lib().llama_get_logits(self.ptr)
        return np.ctypeslib.as_array(ptr, shape=(n_outputs, self.model.n_vocab))

    def logits_row(self, index: int) -> np.ndarray:
        """The logits of batch row `index` of the last decode (n_vocab float32), a view valid until the next one."""
        ptr = lib().llama_get_logits_ith(self.ptr, index)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    # -- per-sequence memory ----------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every sequence (the KV cache's contents)."""
        lib().llama_memory_clear(self._memory, True)

    def seq_rm(self, seq: int, start: int = 0, stop: int = -1) -> bool:
        """Drop sequence `seq`'s cells at positions [start, stop) (stop −1: to the end)."""
        return bool(lib().llama_memory_seq_rm(self._memory, seq, start, stop))

    def seq_cp(self, src: int, dst: int, start: int = 0, stop: int = -1) -> None:
        """Let sequence `dst` share `src`'s cells at positions [start, stop)."""
        lib().llama_memory_seq_cp(self._memory, src, dst, start, stop)

    def seq_keep(self, seq: int) -> None:
        """Drop every cell that does not belong to `seq`."""
        lib().llama_memory_seq_keep(self._memory, seq)

    def seq_pos_max(self, seq: int) -> int:
        """The largest position `seq` holds in the cache; −1 when it holds none."""
        return int(lib().llama_memory_seq_pos_max(self._memory, seq))

    # -- lifetime ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self.ptr is not None:
            lib().llama_free(self.ptr)
            self.ptr = None


def create_context(model: Model, n_ctx: int, n_batch: int | None = None, n_ubatch: int | None = None,
                   n_seq_max: int = 1, threads: int | None = None, kv_unified: bool = False,
                   eval_callback: EvalCallback | None = None, kv_type: int | None = None,
                   flash_attn: bool | None = None) -> Context:
    """A context of `n_ctx` cells in all. `eval_callback` sees the graph's nodes as they are computed; `kv_type`
    is the ggml type of the K and V cache (default F16, llama.cpp's); `flash_attn` None leaves llama.cpp's
    choice (auto)."""
    llama_cpp = lib()
    threads = threads or physical_cores()
    n_batch = min(n_batch or n_ctx, n_ctx)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = min(n_ubatch or params.n_ubatch, n_batch)
    params.n_seq_max = n_seq_max
    params.n_threads = threads
    params.n_threads_batch = threads
    params.kv_unified = kv_unified
    params.no_perf = True
    if kv_type is not None:
        params.type_k = params.type_v = kv_type
    if flash_attn is not None:
        params.flash_attn_type = 1 if flash_attn else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED / _DISABLED
    keep: tuple = ()
    if eval_callback is not None:
        def call(tensor, ask, user_data) -> bool:
            return bool(eval_callback(tensor, bool(ask)))

        raw = llama_cpp.ggml_backend_sched_eval_callback(call)
        params.cb_eval = raw
        params.cb_eval_user_data = ctypes.c_void_p(0)
        keep = (raw,)
    ptr = llama_cpp.llama_init_from_model(model.ptr, params)
    if not ptr:
        raise RuntimeLoadError(f"llama.cpp could not create a context of {n_ctx} tokens for {model.path.name}",
                               hint="try a smaller --ctx or --batch, or fewer --n-gpu-layers")
    # llama.cpp rounds the cells up (to a multiple of 256): the context holds what it reports
    return Context(model, ptr, int(llama_cpp.llama_n_ctx(ptr)), n_batch, n_seq_max, threads, keep)
