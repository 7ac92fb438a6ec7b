"""The engine: one llama.cpp context with a slot per sequence, one decode per step, one thread that owns it all.

Each step gathers into one batch the next token of every generating sequence, then fills the rest of the batch
(up to n_batch) with prompt chunks of the sequences being admitted; decodes once; and samples each sequence from
its own row with its own llama.cpp sampler chain (llama-server's loop, in small). The KV cache is unified: the
sequences share `n_ctx` cells, any of them may use up to the whole context. A finished slot keeps its cells, so
that a request whose prompt begins with what a slot holds (the next turn of a conversation) evaluates only the
new tokens; those cells are the first to go when the cache runs short. When the cache is full, the sequence
admitted last is put back in the queue and recomputed later (its stream just waits). A prompt also takes the cells
of the longest prefix another slot holds (prefix.py: seq_cp); with speculation (speculative.py) each generating
sequence's last token is followed in the batch by proposed tokens, verified with its own sampler.

Callers never touch llama.cpp: they `submit()` a GenerationRequest and read pieces from the Stream they get back,
from any thread or from asyncio.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .. import runtime
from ..errors import ContextFullError, InvalidArgumentError, QuantkitError
from ..resources import Closeable
from . import prefix
from .request import GenerationRequest, GenerationResult, Stream, TokenLogprob
from .speculative import DraftModel, NgramDrafter, Speculation, check_vocabularies
from .text import GeneratedText
from .thinking import LoopDetector, closing_text

log = logging.getLogger(__name__)


class QueueFullError(QuantkitError):
    hint = "try again shortly"


class EngineClosedError(QuantkitError):
    hint = "the engine is shutting down"


@dataclass
class _Job:
    """A request in the engine: its tokens so far (prompt, then each sampled token), what is still to be
    decoded, its sampler and its text."""

    stream: Stream
    tokens: list[int]
    n_prompt: int
    submitted: float
    sampler: runtime.Sampler | None = None
    text: GeneratedText | None = None
    pending: list[int] = field(default_factory=list)  # tokens of `tokens` not yet in the KV cache
    prompt_eval_tokens: int = 0
    admitted: float = 0.0
    first_token: float = 0.0
    admissions: int = 0
    thought: "_ThoughtState | None" = None  # the budget and the loop guard's account, when the request asks
    leader: "_Job | None" = None  # a choice of the same prompt: it copies the leader's evaluated prompt cells
    unreleased: list[TokenLogprob] = field(default_factory=list)  # logprobs of tokens whose text is held back
    logprobs: list[TokenLogprob] = field(default_factory=list)  # those passed on with a piece
    draft: list[int] = field(default_factory=list)  # tokens proposed to follow `pending` in this step
    drafted: int = 0
    accepted: int = 0

    @property
    def request(self) -> GenerationRequest:
        return self.stream.request

    @property
    def n_generated(self) -> int:
        return len(self.tokens) - self.n_prompt


@dataclass
class _ThoughtState:
    """One generation's thought under control: its closing text's tokens, the thought tokens so far, the loop
    guard, and what the engine did."""

    closing: list[int]
    detector: LoopDetector | None
    tokens: int = 0
    forced: int = 0
    budget_reached: bool = False
    looped: bool = False


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # the tokens whose cells this sequence holds (position = index)
    job: _Job | None = None
    last_used: float = 0.0


@dataclass(frozen=True)
class EngineStats:
    n_parallel: int
    n_ctx: int
    waiting: int  # requests queued for a slot
    busy_slots: int
    kv_cells_busy: int  # cells held by running sequences
    kv_cells_cached: int  # cells idle slots keep for prefix reuse
    prompt_tokens: int  # evaluated, since start
    generated_tokens: int
    finished: dict[str, int]  # finish reason → count
    failed: int
    preempted: int  # sequences put back in the queue because the KV cache was full (recomputed later)
    gen_seconds: float  # time the engine spent in steps that generated tokens
    drafted_tokens: int = 0  # speculative decoding: tokens proposed, since start
    accepted_tokens: int = 0  # of those, the ones sampling confirmed


class Engine(Closeable):
    """Continuous batching over one loaded model. `Engine.open(path)` loads and owns the model; `Engine(model)`
    borrows one. Close it (or use `with`) to stop the thread and free the context."""

    def __init__(self, model: runtime.Model, *, n_ctx: int = 8192, n_parallel: int = 4, n_batch: int = 2048,
                 n_ubatch: int = 512, threads: int | None = None, max_queue: int | None = None,
                 speculation: Speculation | None = None, draft_model: runtime.Model | None = None):
        if n_parallel < 1:
            raise InvalidArgumentError(f"an engine needs at least one sequence, not {n_parallel}", param="n_parallel")
        if n_ctx < 2:
            raise InvalidArgumentError(f"a context of {n_ctx} tokens cannot hold a prompt and a reply (2 at least)",
                                       param="n_ctx")
        if speculation is not None and speculation.mode == "draft":  # before any context is made
            if draft_model is None:
                raise InvalidArgumentError("speculation by draft needs the draft model", param="draft")
            check_vocabularies(model, draft_model)
        self.model = model
        self.context = runtime.create_context(model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                                              n_seq_max=n_parallel, threads=threads, kv_unified=True)
        self.n_ctx = self.context.n_ctx  # llama.cpp may round it up
        self.n_parallel = n_parallel
        # one sequence may fill the context asked for (not the cells llama.cpp adds), but not past what the
        # model was trained on
        self.n_ctx_seq = min(n_ctx, model.n_ctx_train) if model.n_ctx_train > 0 else n_ctx
        self.max_queue = max_queue
        self._batch = runtime.Batch(self.context.n_batch)
        self._slots = [_Slot(i) for i in range(n_parallel)]
        self._waiting: deque[_Job] = deque()
        self._inbox: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._step_lock = threading.Lock()  # held by the engine's thread while it works on the context
        self._closing = False
        self._accepting = True
        self._owns_model = False
        self._template = None
        self._closings: dict[str, list[int]] = {}  # closing text → its tokens (the engine's thread only)
        self._counts = {"prompt": 0, "generated": 0, "failed": 0, "preempted": 0, "gen_seconds": 0.0, "drafted": 0,
                        "accepted": 0}
        self._finished: dict[str, int] = {}
        self.speculation = speculation
        try:
            self._drafter = self._make_drafter(speculation, draft_model, n_batch, threads)
        except BaseException:
            self.context.close()
            self._batch.close()
            raise
        self._owns_draft = False
        self._thread = threading.Thread(target=self._run, name="quantkit-engine", daemon=True)
        self._thread.start()

    def _make_drafter(self, spec: Speculation | None, draft_model: runtime.Model | None, n_batch: int,
                      threads: int | None):
        if spec is None:
            return None
        if spec.mode == "ngram":
            return NgramDrafter(spec)
        return DraftModel(draft_model, spec, target_vocab=self.model.n_vocab, n_ctx=self.n_ctx,
                          n_seq=self.n_parallel, n_batch=min(n_batch, 512), threads=threads)

    @classmethod
    def open(cls, path: str | Path, *, n_ctx: int = 8192, n_gpu_layers: int | str = "auto",
             rpc: list[str] | None = None, **kwargs) -> "Engine":
        """Load the GGUF at `path` (offloading per `n_gpu_layers` at this context, to the RPC servers `rpc` too)
        and start an engine on it."""
        from ..runtime.offload import load_model, load_with_draft

        spec = kwargs.get("speculation")
        draft = None
        if spec is not None and spec.draft is not None:  # 'auto' places the draft first, the target in the rest
            model, draft = load_with_draft(path, spec.draft, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, rpc=rpc)
        else:
            model = load_model(path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, rpc=rpc)
        try:
            if model.n_ctx_train > 0:  # no sequence goes past the training context: no cells for that either
                n_ctx = min(n_ctx, model.n_ctx_train * kwargs.get("n_parallel", 4))
            engine = cls(model, n_ctx=n_ctx, draft_model=draft, **kwargs)
        except BaseException:
            if draft is not None:
                draft.close()
            model.close()
            raise
        engine._owns_model = True
        engine._owns_draft = draft is not None
        return engine

    # -- the callers' side ------------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None) -> Stream:
        """Queue a generation; read its pieces from the returned stream (pass the running loop for asyncio)."""
        return self.submit_many([request], loop)[0]

    def submit_many(self, requests: list[GenerationRequest], loop: asyncio.AbstractEventLoop | None = None,
                    share_prompt: bool = False) -> list[Stream]:
        """Queue several generations at once: the engine sees all of them in the same step, so the way they are
        batched does not depend on when its thread woke up. `share_prompt`: the requests have the same prompt
        (several choices of one request): it is evaluated once, by the first, whose cells the others copy."""
        jobs = [self._job(request, loop) for request in requests]
        if share_prompt:
            if any(list(r.tokens) != list(requests[0].tokens) for r in requests):
                raise InvalidArgumentError("requests that share a prompt must have the same prompt", param="n")
            for job in jobs[1:]:
                job.leader = jobs[0]
        with self._cond:
            if not self._accepting:
                raise EngineClosedError("the engine is not taking new requests")
            if self.max_queue is not None and len(self._inbox) + len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFullError(f"{self.max_queue} requests are already waiting", param="max_queue")
            self._inbox.extend(jobs)
            self._cond.notify()
        return [job.stream for job in jobs]

    def _job(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None) -> _Job:
        n = len(request.tokens)
        if n == 0:
            raise InvalidArgumentError("the prompt is empty", param="prompt")
        if n >= self.n_ctx_seq:
            raise ContextFullError(f"the prompt needs {n} tokens, the context holds {self.n_ctx_seq}", param="n_ctx")
        if request.max_tokens is not None and request.max_tokens < 1:
            raise InvalidArgumentError(f"a generation of {request.max_tokens} tokens ends before it starts (1 at "
                                       "least)", param="max_tokens")
        stream = Stream(request, loop)
        stream._on_cancel = self._wake
        return _Job(stream, [int(t) for t in request.tokens], n, time.perf_counter())

    @property
    def template(self):
        """The model's chat template (ChatTemplateError when it has none that works), read once."""
        if self._template is None:
            from .templates import model_template

            self._template = model_template(self.model)
        return self._template

    @property
    def alive(self) -> bool:
        """Whether the engine's thread runs and takes requests (false once it failed or closed)."""
        return self._thread.is_alive() and self._accepting

    def stats(self) -> EngineStats:
        with self._cond:
            busy = [s for s in self._slots if s.job is not None]
            return EngineStats(
                n_parallel=self.n_parallel, n_ctx=self.n_ctx, waiting=len(self._inbox) + len(self._waiting),
                busy_slots=len(busy), kv_cells_busy=sum(len(s.cached) for s in busy),
                kv_cells_cached=sum(len(s.cached) for s in self._slots if s.job is None),
                prompt_tokens=self._counts["prompt"], generated_tokens=self._counts["generated"],
                finished=dict(self._finished), failed=self._counts["failed"],
                preempted=self._counts["preempted"], gen_seconds=self._counts["gen_seconds"],
                drafted_tokens=self._counts["drafted"], accepted_tokens=self._counts["accepted"])

    def kv_cells_in_llama(self) -> dict[int, int]:
        """Per sequence, the cells llama.cpp itself holds (its largest position + 1): to check the engine's own
        account (tests, metrics). Read between two steps; it matches the engine's account while it is idle."""
        with self._step_lock:
            return {s.seq: self.context.seq_pos_max(s.seq) + 1 for s in self._slots}

    def drain(self, timeout: float) -> bool:
        """Stop taking requests and wait up to `timeout` seconds for those in flight; True if all finished."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._accepting = False
            self._cond.notify()
            return self._cond.wait_for(self._idle, max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Cancel whatever is left, stop the thread and free the context (and the model, if the engine owns it)."""
        with self._cond:
            self._accepting = False
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._batch.close()
        self.context.close()
        if self._drafter is not None:
            self._drafter.close()
            if self._owns_draft:
                self._drafter.model.close()
        if self._owns_model:
            self.model.close()

    # -- the engine's thread ----------------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _idle(self) -> bool:
        return not self._inbox and not self._waiting and all(s.job is None for s in self._slots)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closing and self._idle():
                        self._cond.notify_all()  # drain() waits for this
                        self._cond.wait()
                    if self._closing:
                        break
                    self._waiting.extend(self._inbox)
                    self._inbox.clear()
                with self._step_lock:
                    self._step()
        except BaseException as e:  # a libllama failure or a bug: every caller hears of it, nobody hangs
            log.exception("the engine stopped")
            self._fail_everything(e if isinstance(e, QuantkitError) else
                                  QuantkitError(f"the engine stopped: {type(e).__name__}: {e}"))
            return
        with self._step_lock:
            self._cancel_everything()

    def _step(self) -> None:
        self._drop_cancelled()
        self._admit()
        t0 = time.perf_counter()
        self._propose()
        while True:
            rows = self._fill_batch()
            if not rows:
                return
            try:
                self.context.decode(self._batch)
                break
            except runtime.KVCacheFullError:
                if not (_had_drafts(rows) or self._evict_idle() or self._preempt(rows)):
                    raise
        generating = any(n - len(draft) == 1 and row is not None for n, row, draft in rows.values())
        self._after_decode(rows)
        if generating:
            self._counts["gen_seconds"] += time.perf_counter() - t0

    # -- admission --------------------------------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._waiting if j.stream.cancelled]:
            self._waiting.remove(job)
            self._finish(None, job, "cancelled")
        for slot in self._slots:
            if slot.job is not None and slot.job.stream.cancelled:
                self._finish(slot, slot.job, "cancelled")

    def _admit(self) -> None:
        deferred = []
        while self._waiting:
            free = [s for s in self._slots if s.job is None]
            if not free:
                break
            job = self._waiting.popleft()
            if self._prompt_source(job) is _WAIT:
                deferred.append(job)  # a choice of a prompt its leader is evaluating: copy the leader's cells
                continue
            source, shared = prefix.best_source(job.tokens, self._slots)
            if prefix.should_wait(job.tokens, self._slots, shared):
                deferred.append(job)  # another slot is evaluating most of this prompt: copy its cells next step
                continue
            slot = prefix.choose_slot(job.tokens, free)
            self._place(slot, job, source, shared)
        self._waiting.extendleft(reversed(deferred))

    def _place(self, slot: _Slot, job: _Job, source: _Slot | None, shared: int) -> None:
        """Give `job` the slot, with the longest prefix of its prompt that any slot holds: the slot's own cells,
        then `source`'s shared through seq_cp. The last token is always evaluated: its logits start the reply."""
        own = prefix.common_prefix(slot.cached, job.tokens)
        keep = min(max(own, shared), len(job.tokens) - 1)
        self.context.seq_rm(slot.seq, min(own, keep), -1)
        if keep > own:
            self.context.seq_cp(source.seq, slot.seq, own, keep)
        slot.cached = job.tokens[:keep]
        slot.job = job
        job.pending = job.tokens[keep:]
        job.admissions += 1
        if job.admissions == 1:
            job.admitted = time.perf_counter()
            job.prompt_eval_tokens = len(job.pending)
            job.sampler = runtime.Sampler(job.request.sampling, self.model)
            req = job.request
            job.text = GeneratedText(req.opened_thought, req.split_reasoning, req.stop)
            if req.thinking.active:
                job.thought = self._thought_state(req)

    def _prompt_source(self, job: _Job):
        """For a choice that shares its leader's prompt: the leader's slot once it holds the prompt (all but its
        last token), _WAIT while the leader's prompt is being evaluated, None to evaluate the prompt itself."""
        leader = job.leader
        if leader is None or job.admissions > 0 or leader.stream.done:
            return None
        slot = next((s for s in self._slots if s.job is leader), None)
        if slot is None:
            return _WAIT  # the leader waits for a slot itself
        return slot if len(slot.cached) >= job.n_prompt - 1 else _WAIT

    def _thought_state(self, req: GenerationRequest) -> _ThoughtState:
        text = closing_text(req.thinking.message)
        if text not in self._closings:
            self._closings[text] = self.model.tokenize(text.encode(), add_special=False, parse_special=True).tolist()
        detector = LoopDetector() if req.thinking.loop_guard != "off" else None
        return _ThoughtState(self._closings[text], detector)

    def _evict_idle(self) -> bool:
        """Free the cells idle slots keep for reuse, least recently used first; False if there were none."""
        idle = sorted((s for s in self._slots if s.job is None and s.cached), key=lambda s: s.last_used)
        for slot in idle:
            self.context.seq_rm(slot.seq, 0, -1)
            slot.cached = []
        return bool(idle)

    def _preempt(self, rows: dict) -> bool:
        """Put the sequence admitted last back at the head of the queue, its cells freed; it is recomputed from
        its tokens when a slot is free again. False when only one sequence runs (it cannot be made smaller)."""
        running = [s for s in self._slots if s.job is not None]
        if len(running) < 2:
            return False
        slot = max(running, key=lambda s: s.job.admitted)
        log.info("KV cache full: sequence %d waits and will be recomputed", slot.seq)
        self.context.seq_rm(slot.seq, 0, -1)
        slot.cached = []
        self._waiting.appendleft(slot.job)
        slot.job = None
        self._counts["preempted"] += 1
        return True

    # -- speculation --------------------------------------------------------------------------------------------

    def _propose(self) -> None:
        """Ask the drafter for tokens to follow every sequence whose next decode is its one last token."""
        if self._drafter is None:
            return
        spec, wants, jobs = self.speculation, [], {}
        for slot in self._slots:
            job = slot.job
            if job is None or len(job.pending) != 1:
                continue
            k = min(spec.draft_max, self.n_ctx_seq - len(job.tokens) - 1)
            if job.request.max_tokens is not None:  # the token sampled after the last accepted one counts too
                k = min(k, job.request.max_tokens - job.n_generated - 1)
            if k >= max(1, spec.draft_min):
                wants.append((slot.seq, job.tokens, k))
                jobs[slot.seq] = job
        if not wants:
            return
        for seq, draft in self._drafter.propose(wants).items():
            jobs[seq].draft = draft if len(draft) >= spec.draft_min else []

    def _verify(self, slot: _Slot, job: _Job, row: int, draft: list[int]) -> None:
        """Sample the rows of the last token and of each proposed one in turn, keeping proposals while the
        sampled token is the proposed one; drop the cells of the rest."""
        base = len(slot.cached)  # the position of draft[0]
        job.drafted += len(draft)  # counted before a sampled token can end the generation (and make its result)
        self._counts["drafted"] += len(draft)
        accepted = 0
        for i in range(len(draft) + 1):
            if not self._next_token(slot, job, row + i):
                break
            if i == len(draft) or job.pending != [draft[i]]:
                break  # the sampled token differs (or forced tokens follow it): it is decoded next step
            slot.cached.append(job.pending.pop())  # its cell is the proposal's
            accepted += 1
            job.accepted += 1
            self._counts["accepted"] += 1
        if accepted < len(draft):
            self.context.seq_rm(slot.seq, base + accepted, -1)

    # -- one step ---------------------------------------------------------------------------------------------

    def _fill_batch(self) -> dict[int, tuple[int, int | None, list[int]]]:
        """The next token of every generating sequence (and the tokens proposed to follow it), then prompt
        chunks. Returns, per slot with tokens in the batch, how many it added, the batch row of its last pending
        token when a token is to be sampled from it, and the proposed tokens in the rows after that one."""
        batch = self._batch
        batch.clear()
        rows: dict[int, tuple[int, int | None, list[int]]] = {}
        busy = [s for s in self._slots if s.job is not None]
        for slot in sorted(busy, key=lambda s: len(s.job.pending) > 1):  # generating first, then prompts
            job = slot.job
            pending = job.pending
            room = batch.capacity - batch.n_tokens
            if not pending or room == 0:
                continue
            n = min(room, len(pending))
            start = len(slot.cached)
            for i in range(n):
                row = batch.add(pending[i], start + i, slot.seq, i == len(pending) - 1)
            draft = job.draft[:room - n] if n == len(pending) else []
            job.draft = []
            for i, token in enumerate(draft):
                batch.add(token, start + n + i, slot.seq, True)
            rows[slot.seq] = (n + len(draft), row if n == len(pending) else None, draft)
        return rows

    def _after_decode(self, rows: dict[int, tuple[int, int | None]]) -> None:
        for slot in self._slots:
            if slot.seq not in rows:
                continue
            n, row, draft = rows[slot.seq]
            n -= len(draft)
            job = slot.job
            slot.cached.extend(job.pending[:n])
            del job.pending[:n]
            if job.n_generated == 0:
                self._counts["prompt"] += n
            if draft:
                self._verify(slot, job, row, draft)
            elif row is not None:
                self._next_token(slot, job, row)

    def _next_token(self, slot: _Slot, job: _Job, row: int) -> bool:
        """Sample the token of batch row `row` and pass it on; False when the generation ended."""
        req = job.request
        if len(slot.cached) >= self.n_ctx_seq:
            self._finish(slot, job, "context")  # no cell left for another token of this sequence
            return False
        probs = None
        if req.logprobs is None:
            token = job.sampler.sample(self.context, row)
        else:
            probs = job.sampler.sample_with_probs(self.context, row, req.logprobs)
            token = probs.token
        now = time.perf_counter()
        if job.first_token == 0.0:
            job.first_token = now
        if self.model.is_end_of_generation(token):
            self._finish(slot, job, "stop")
            return False
        was_in_thought = job.text.in_thought
        self._append(job, token, probs)
        if job.text.stopped:
            self._finish(slot, job, "stop")
            return False
        if job.thought is not None and job.text.in_thought and self._control_thought(slot, job, token,
                                                                                      was_in_thought):
            return False  # the thought's control ended the generation
        if req.max_tokens is not None and job.n_generated >= req.max_tokens:
            self._finish(slot, job, "length")
            return False
        return True

    def _append(self, job: _Job, token: int, probs: runtime.TokenProbs | None = None) -> None:
        """A generated token (sampled or forced): to be decoded next, and through the text path to the stream.
        A sampled token's probabilities go out with the next piece of text released."""
        job.tokens.append(token)
        job.pending.append(token)
        self._counts["generated"] += 1
        pieces = job.text.feed(self.model.token_piece(token))
        if probs is not None:
            job.unreleased.append(self._logprob(job, probs))
        self._push(job, pieces)

    def _push(self, job: _Job, pieces: list) -> None:
        if pieces and job.unreleased:
            pieces[-1].logprobs = tuple(job.unreleased)
            job.logprobs.extend(job.unreleased)
            job.unreleased = []
        for piece in pieces:
            job.stream._push(piece)

    def _logprob(self, job: _Job, probs: runtime.TokenProbs) -> TokenLogprob:
        text = job.text
        thought = text.in_thought or (text.close_at is not None and text.close_at == text.n_tokens)
        piece = self.model.token_piece
        return TokenLogprob(probs.token, piece(probs.token), probs.logprob,
                            tuple((t, piece(t), lp) for t, lp in probs.top), thought)

    # -- the thought under control ----------------------------------------------------------------------------

    def _control_thought(self, slot: _Slot, job: _Job, token: int, counted: bool) -> bool:
        """The budget and the loop guard after one more token inside the thought (`counted`: it is a thought
        token, not the one that opened the thought). True when the generation ended."""
        state, thinking = job.thought, job.request.thinking
        if counted:
            state.tokens += 1
            if state.detector is not None and state.detector.feed(token):
                state.looped = True
                log.info("sequence %d: the thought repeats itself after %d tokens (loop guard: %s)", slot.seq,
                         state.tokens, thinking.loop_guard)
                if thinking.loop_guard == "stop":
                    self._finish(slot, job, "stop")
                    return True
                return self._close_thought(slot, job)
        if thinking.budget is not None and state.tokens >= thinking.budget:
            state.budget_reached = True
            return self._close_thought(slot, job)
        return False

    def _close_thought(self, slot: _Slot, job: _Job) -> bool:
        """Append the closing text as forced tokens, as many as max_tokens and the context leave room for; they
        are decoded in the next step and sampling resumes after them. True when the generation ended."""
        state, max_tokens = job.thought, job.request.max_tokens
        room = self.n_ctx_seq - len(job.tokens)
        reason = "context"
        if max_tokens is not None and max_tokens - job.n_generated <= room:
            room, reason = max_tokens - job.n_generated, "length"
        for token in state.closing[:max(room, 0)]:
            state.forced += 1
            job.sampler.accept(token)  # the penalties and a lazy grammar see it (the grammar waits for `</think>`)
            self._append(job, token)
            if job.text.stopped:  # a stop string inside the closing text
                self._finish(slot, job, "stop")
                return True
        if len(state.closing) >= room:
            self._finish(slot, job, reason)
            return True
        return False

    # -- endings ----------------------------------------------------------------------------------------------

    def _finish(self, slot: _Slot | None, job: _Job, reason: str) -> None:
        now = time.perf_counter()
        text = job.text
        if text is not None:
            self._push(job, text.finish())
            reasoning_tokens, answer_tokens = text.counts
            splitter = text.splitter
            result = GenerationResult(
                text=text.text, reasoning=splitter.thought, answer=splitter.answer, prompt_tokens=job.n_prompt,
                prompt_eval_tokens=job.prompt_eval_tokens, reasoning_tokens=reasoning_tokens,
                answer_tokens=answer_tokens, finish_reason=reason, thought_unfinished=splitter.thought_unfinished,
                **_thought_fields(job.thought), logprobs=job.logprobs, drafted_tokens=job.drafted,
                accepted_tokens=job.accepted,
                queue_seconds=job.admitted - job.submitted,
                prompt_seconds=(job.first_token or now) - job.admitted,
                gen_seconds=now - job.first_token if job.first_token else 0.0)
        else:  # cancelled before it had a slot
            result = GenerationResult(prompt_tokens=job.n_prompt, finish_reason=reason)
        if job.sampler is not None:
            job.sampler.close()
        if slot is not None:
            slot.job = None
            slot.last_used = now
            if reason == "cancelled":  # its cells go back at once
                self.context.seq_rm(slot.seq, 0, -1)
                slot.cached = []
        with self._cond:
            self._finished[reason] = self._finished.get(reason, 0) + 1
        job.stream._finish(result)

    def _cancel_everything(self) -> None:
        for slot in self._slots:
            if slot.job is not None:
                self._finish(slot, slot.job, "cancelled")
        for job in [*self._waiting, *self._inbox]:
            self._finish(None, job, "cancelled")
        self._waiting.clear()
        self._inbox.clear()

    def _fail_everything(self, error: BaseException) -> None:
        with self._cond:
            self._accepting = False
            jobs = [s.job for s in self._slots if s.job is not None] + [*self._waiting, *self._inbox]
            for slot in self._slots:
                slot.job = None
            self._waiting.clear()
            self._inbox.clear()
            self._counts["failed"] += len(jobs)
            self._cond.notify_all()
        for job in jobs:
            if job.sampler is not None:
                job.sampler.close()
            job.stream._finish(error=error)


_WAIT = object()  # _prompt_source: not yet


def _thought_fields(state: _ThoughtState | None) -> dict:
    if state is None:
        return {}
    return {"forced_tokens": state.forced, "budget_reached": state.budget_reached, "looped": state.looped,
            "thought_tokens": state.tokens}



def _had_drafts(rows: dict) -> bool:
    """Whether the batch that did not fit held proposals: _fill_batch took them from their jobs, so the next batch
    is the same without them."""
    return any(draft for _, _, draft in rows.values())
