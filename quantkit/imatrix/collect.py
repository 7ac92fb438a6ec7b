"""Collecting an importance matrix through libllama's eval callback, with llama-imatrix's method
(tools/imatrix/imatrix.cpp of the bundled llama.cpp).

The text is tokenized once with BOS and cut into chunks of `n_ctx` tokens, each starting with BOS;
n_batch / n_ctx chunks are decoded at once (one KV sequence each), with logits asked for every token so that the
last layer and `output.weight` see every row. The callback accepts every MUL_MAT_ID node and the MUL_MAT nodes
whose weight is a `blk.*` tensor (or `output.weight` with `process_output`) and whose F32 activations have at
least 16 rows. For each accepted node it adds x² of every activation row to the weight's per-column sums, in row
order, in float32 — llama-imatrix's order, so the sums are the same numbers — and counts the rows: per expert for
MUL_MAT_ID (one count per routed token), else the activation rows per call.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError, QuantkitError, TextTooShortError
from .format import Imatrix, ImatrixEntry

log = logging.getLogger(__name__)

DEFAULT_CTX = 512
DEFAULT_BATCH = 2048  # llama-imatrix's n_batch: 4 chunks of 512 per decode
MIN_ROWS = 16  # llama-imatrix ignores matrix products of fewer activation rows
F32_TYPE = 0  # ggml_type

Progress = Callable[[int, int], None]  # (chunks done, chunks in all)


class NonFiniteActivationsError(QuantkitError):
    hint = "the model produced inf/NaN activations on this text: check the model file (quantkit perplexity)"


@dataclass
class CollectStats:
    n_tokens: int  # tokens in the whole text
    n_chunks: int
    n_ctx: int
    n_seq: int  # chunks per decode
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.n_chunks * self.n_ctx / self.seconds if self.seconds else 0.0


class Accumulator:
    """llama-imatrix's `collect_imatrix`, as an eval callback over `runtime.graph` nodes."""

    def __init__(self, process_output: bool = False):
        from ..runtime import graph

        self._graph = graph
        self.process_output = process_output
        self.mul_mat = graph.op_code("MUL_MAT")
        self.mul_mat_id = graph.op_code("MUL_MAT_ID")
        self.sums: dict[str, np.ndarray] = {}  # name → (len(counts), n) float32, llama-imatrix's `values`
        self.counts: dict[str, np.ndarray] = {}  # name → int64
        self.error: BaseException | None = None
        self._wanted: dict[int, bool] = {}  # weight tensor pointer → is it collected
        self._last: tuple | None = None  # the last dense call: (its activations, sums before, sums after)

    def __call__(self, ptr: int, ask: bool) -> bool:
        try:
            op = self._graph.node_op(ptr)
            if ask:
                return self._ask(ptr, op)
            node = self._graph.Node(ptr)
            if op == self.mul_mat_id:
                self._add_experts(node)
            else:
                self._add_dense(node)
            return True
        except BaseException as e:  # an exception must not cross into C: stop the graph and raise it after
            self.error = e
            return False

    def _ask(self, ptr: int, op: int) -> bool:
        if op == self.mul_mat_id:
            return True
        if op != self.mul_mat:
            return False
        node = self._graph.Node(ptr)
        src1 = node.src(1)
        if src1.ne[1] < MIN_ROWS or src1.type != self._graph.F32:
            return False
        weight = node.src(0)
        wanted = self._wanted.get(weight.ptr)
        if wanted is None:
            name = self._graph.weight_name(weight.name)
            wanted = self._wanted[weight.ptr] = name.startswith("blk.") or (
                self.process_output and name == "output.weight")
        return wanted

    def _add_dense(self, node) -> None:
        src0, src1 = node.src(0), node.src(1)
        name = self._graph.weight_name(src0.name)
        x = src1.array()  # (ne3, ne2, ne1, ne0)
        ne0 = x.shape[3]
        s0 = src0.ne
        n_mat = s0[2] * s0[3]
        sums = self.sums.get(name)
        if sums is None:
            sums = self.sums[name] = np.zeros((1, ne0 * n_mat), dtype=np.float32)
            self.counts[name] = np.zeros(1, dtype=np.int64)
        elif sums.size != ne0 * n_mat:
            raise QuantkitError(f"{name}: inconsistent activation size ({sums.size} vs {ne0 * n_mat})")
        rows = x.shape[0] * x.shape[1] * x.shape[2] // n_mat
        # attn_q/k/v (and ffn_gate/up) read the same activations one after the other, into sums that have been
        # equal since the first token: the second and third get the first's result instead of the same sums again
        key = (src1.ptr, x.ctypes.data, x.shape, x.strides)
        if n_mat == 1 and self._last is not None and self._last[0] == key and np.array_equal(sums, self._last[1]):
            sums[...] = self._last[2]
            self.counts[name] += rows
            return
        before = sums.copy() if n_mat == 1 else None
        per_mat = sums.reshape(n_mat, ne0)
        for i3 in range(x.shape[0]):
            for i2 in range(x.shape[1]):
                mat = (i3 % s0[3]) * s0[2] + (i2 % s0[2])
                _add_squares(per_mat[mat], x[i3, i2])
        if not np.isfinite(sums).all():
            raise NonFiniteActivationsError(f"non-finite activations reached {name}")
        self.counts[name] += rows
        self._last = (key, before, sums.copy()) if before is not None else None

    def _add_experts(self, node) -> None:
        src0, src1, ids_node = node.src(0), node.src(1), node.src(2)
        name = self._graph.weight_name(src0.name)
        x = src1.array()  # (1, n_tokens, ne11, ne0)
        ids = ids_node.array()[0, 0]  # (n_tokens, n_ids)
        if x.shape[0] != 1:
            raise QuantkitError(f"{name}: expert activations with more than 3 dimensions")
        n_as = src0.ne[2]
        n_tokens, n_ids = ids.shape
        ne0 = x.shape[3]
        sums = self.sums.get(name)
        if sums is None:
            sums = self.sums[name] = np.zeros((n_as, ne0), dtype=np.float32)
            self.counts[name] = np.zeros(n_as, dtype=np.int64)
        elif sums.shape != (n_as, ne0):
            raise QuantkitError(f"{name}: inconsistent expert activations ({sums.shape} vs {(n_as, ne0)})")
        # llama-imatrix's order: for each routing slot, every token in turn
        experts = ids.T.reshape(-1)
        if experts.min(initial=0) < 0 or experts.max(initial=0) >= n_as:
            raise QuantkitError(f"{name}: an expert id out of range")
        rows = np.concatenate([x[0, :, idx % x.shape[2]] for idx in range(n_ids)])
        np.add.at(sums, experts, rows * rows)  # unbuffered, in index order
        self.counts[name] += np.bincount(experts, minlength=n_as)
        touched = np.unique(experts)
        if not np.isfinite(sums[touched]).all():
            raise NonFiniteActivationsError(f"non-finite activations reached {name}")

    def imatrix(self, chunk_size: int, datasets: list[str]) -> Imatrix:
        entries = {name: ImatrixEntry(self.sums[name].copy(), self.counts[name].copy()) for name in sorted(self.sums)}
        top = max((int(c.max()) for c in self.counts.values()), default=0)
        return Imatrix(entries, datasets=datasets, chunk_count=top // chunk_size, chunk_size=chunk_size)


def _add_squares(acc: np.ndarray, rows: np.ndarray) -> None:
    """acc += Σ rows², row after row in float32 (llama-imatrix's order, hence its exact numbers)."""
    if rows.shape[0] == 0:
        return
    sq = rows * rows
    sq[0] += acc
    np.add.reduce(sq, axis=0, out=acc)


@dataclass(frozen=True)
class Plan:
    n_ctx: int
    n_batch: int
    n_seq: int
    n_chunks: int


def make_plan(n_tokens: int, n_ctx: int, n_batch: int = DEFAULT_BATCH, chunks: int | None = None) -> Plan:
    """llama-imatrix's cut: n_tokens // n_ctx chunks (at most `chunks`), n_batch // n_ctx of them per decode."""
    if n_ctx < MIN_ROWS:
        raise InvalidArgumentError(f"--ctx must be at least {MIN_ROWS} (llama-imatrix skips smaller products)")
    if chunks is not None and chunks < 1:
        raise InvalidArgumentError(f"--chunks must be at least 1, not {chunks}")
    if n_batch < n_ctx and n_ctx % n_batch:
        raise InvalidArgumentError(f"--batch {n_batch} must divide --ctx {n_ctx} or be a multiple of it")
    if n_batch > n_ctx and n_batch % n_ctx:
        n_batch -= n_batch % n_ctx
    if n_tokens < n_ctx:
        raise TextTooShortError(f"the calibration text is {n_tokens} tokens long; one chunk of --ctx {n_ctx} "
                                f"needs {n_ctx}")
    n_chunks = n_tokens // n_ctx if chunks is None else min(chunks, n_tokens // n_ctx)
    n_seq = max(1, n_batch // n_ctx)
    return Plan(n_ctx, min(n_batch, n_seq * n_ctx), n_seq, n_chunks)


def collect_imatrix(model_path: Path, text: bytes, *, dataset: str, n_ctx: int = DEFAULT_CTX,
                    n_batch: int = DEFAULT_BATCH, chunks: int | None = None, process_output: bool = False,
                    threads: int | None = None, n_gpu_layers: int | str = "auto", f32_attention: bool = False,
                    progress: Progress | None = None, rpc: list[str] | None = None) -> tuple[Imatrix, CollectStats]:
    """The importance matrix of the GGUF `model_path` on `text` (llama-imatrix's numbers); `dataset` is the
    name recorded in the file's `imatrix.datasets`. `f32_attention`: an F32 KV cache and no flash attention
    (whose CPU kernel works in F16), like llama-imatrix's `-ctk f32 -ctv f32 -fa off`: attention in float32,
    for comparisons with float32 references."""
    from ..runtime.offload import load_model
    from ..runtime import Batch, create_context

    accumulator = Accumulator(process_output)
    with load_model(model_path, n_gpu_layers, n_ctx, rpc=rpc) as model:
        tokens = model.tokenize(text, add_special=True)
        plan = make_plan(len(tokens), n_ctx, n_batch, chunks)
        log.info("%d tokens; %d chunks of %d, %d per decode", len(tokens), plan.n_chunks, n_ctx, plan.n_seq)
        t0 = time.perf_counter()
        with create_context(model, plan.n_seq * n_ctx, plan.n_batch, n_seq_max=plan.n_seq, threads=threads,
                            eval_callback=accumulator, kv_type=F32_TYPE if f32_attention else None,
                            flash_attn=False if f32_attention else None) as ctx, Batch(plan.n_batch) as batch:
            for i in range(0, plan.n_chunks, plan.n_seq):
                n_seq = min(plan.n_seq, plan.n_chunks - i)
                chunk = tokens[i * n_ctx:(i + n_seq) * n_ctx].reshape(n_seq, n_ctx).copy()
                if model.add_bos:
                    chunk[:, 0] = model.bos
                ctx.clear()
                _decode(ctx, batch, chunk, plan.n_batch, accumulator)
                if progress:
                    progress(i + n_seq, plan.n_chunks)
            ctx.synchronize()
        seconds = time.perf_counter() - t0
    stats = CollectStats(len(tokens), plan.n_chunks, n_ctx, plan.n_seq, seconds)
    log.info("%d chunks in %.1f s (%.1f tokens/s)", plan.n_chunks, seconds, stats.tokens_per_second)
    return accumulator.imatrix(n_ctx, [dataset]), stats


def _decode(ctx, batch, chunk: np.ndarray, n_batch: int, accumulator: Accumulator) -> None:
    """Decode `chunk` (n_seq rows of n_ctx tokens; one decode, or pieces of n_batch for one long chunk),
    every token an output, as llama-imatrix does."""
    n_seq, n_ctx = chunk.shape
    pos = np.arange(n_ctx, dtype=np.int32)
    for lo in range(0, n_ctx, n_batch):
        sl = slice(lo, min(lo + n_batch, n_ctx))
        n = sl.stop - lo
        batch.set(chunk[:, sl].ravel(), np.tile(pos[sl], n_seq), np.repeat(np.arange(n_seq, dtype=np.int32), n),
                  np.ones(n * n_seq, dtype=bool))
        try:
            ctx.decode(batch)
        except QuantkitError:
            if accumulator.error is not None:
                raise accumulator.error from None
            raise
        if accumulator.error is not None:
            raise accumulator.error
