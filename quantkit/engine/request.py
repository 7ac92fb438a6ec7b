"""What callers hand the engine and what they get back: a request, a stream of pieces, a result."""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

from .reasoning import CLOSE, Piece
from .thinking import Thinking
from ..runtime import Sampling

# Why a generation ended: an end-of-generation token or a stop string, the max_tokens budget, a full context,
# or the caller cancelled it (chat calls its Ctrl-C "interrupted").
FINISH_REASONS = ("stop", "length", "context", "cancelled", "interrupted")


@dataclass(frozen=True)
class GenerationRequest:
    tokens: Sequence[int]  # the whole prompt, BOS included
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None  # None: until an end-of-generation token or a full context
    stop: tuple[str, ...] = ()  # strings that end the generation (not included in the text)
    opened_thought: bool = False  # the prompt ends inside a thought (the template wrote `<think>\n`)
    split_reasoning: bool = True  # False: every piece is an answer piece, tags and all
    thinking: Thinking = field(default_factory=Thinking)  # the thought's budget and loop guard (engine/thinking.py)
    logprobs: int | None = None  # report each sampled token's log-probability and this many top alternatives


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token's log-probability, from the distribution the sampler drew it from (runtime.TokenProbs):
    its text's bytes, and the top alternatives as (id, bytes, log-probability). `thought`: the token is part of
    the thought (the one that closes it included)."""

    token: int
    text: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...]
    thought: bool = False


@dataclass
class GenerationResult:
    """One generation and its numbers, for every caller (chat's turns, serve's answers, eval's samples, also
    those read back from an OpenAI endpoint). `reasoning_tokens + answer_tokens` are the generated tokens (an
    end-of-generation token not counted); `prompt_eval_tokens` the prompt tokens that had to be evaluated (the
    rest was still in the slot's KV cache)."""

    text: str = ""  # everything generated, tags included, a stop string excluded
    reasoning: str = ""
    answer: str = ""
    prompt_tokens: int = 0
    prompt_eval_tokens: int = 0
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    finish_reason: str = "stop"
    thought_unfinished: bool = False  # a thought was opened and never closed
    forced_tokens: int = 0  # of the generated tokens, those the engine appended (the closing text), not sampled
    budget_reached: bool = False  # the reasoning budget ended the thought
    looped: bool = False  # the loop guard found the thought repeating itself (and ended it, or the generation)
    drafted_tokens: int = 0  # speculative decoding: tokens proposed (by the draft model or the n-gram lookup)
    accepted_tokens: int = 0  # of those, the ones the model's own sampling confirmed
    thought_tokens: int | None = None  # the model's own thought tokens as the budget counts them (None: no budget
    # or guard was asked); a budget above it would have left this generation as it is
    queue_seconds: float = 0.0  # submitted → given a slot
    prompt_seconds: float = 0.0  # given a slot → first token sampled
    gen_seconds: float = 0.0  # first token sampled → end
    logprobs: list[TokenLogprob] = field(default_factory=list)  # with request.logprobs: the sampled tokens' (those
    # whose text was passed on: a stop string's are not; forced tokens have none)

    @property
    def gen_tokens(self) -> int:
        return self.reasoning_tokens + self.answer_tokens

    @property
    def sampled_tokens(self) -> int:
        """The model's own tokens: the generated ones less the forced ones."""
        return self.gen_tokens - self.forced_tokens

    @property
    def seconds(self) -> float:
        """Submitted → end."""
        return self.queue_seconds + self.prompt_seconds + self.gen_seconds

    @property
    def graded_answer(self) -> str | None:
        """The answer to grade: None when the thought never closed (there is no answer)."""
        return None if self.thought_unfinished else self.answer

    @property
    def history_text(self) -> str:
        """What the next prompt keeps of this reply: the text after `</think>`, as the R1 template cuts it (it
        keeps the blank lines the model wrote after the tag); nothing of a thought that never closed."""
        if CLOSE in self.text:
            return self.text.split(CLOSE)[-1]
        return "" if self.thought_unfinished else self.text

    @property
    def rejected_tokens(self) -> int:
        return self.drafted_tokens - self.accepted_tokens

    @property
    def acceptance(self) -> float:
        """The share of drafted tokens accepted (0 when nothing was drafted)."""
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_eval_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def gen_tps(self) -> float:
        # the first token comes with the prompt: the rate counts the tokens after it
        n = self.gen_tokens - 1
        return n / self.gen_seconds if n > 0 and self.gen_seconds > 0 else 0.0


_END = object()


class Stream:
    """The pieces of one generation as the engine makes them, for a thread (`for piece in stream`) or for asyncio
    (`async for piece in stream`, when submitted with the running loop). Leaving a sync loop early, or calling
    `cancel()`, cancels the generation; `result` is set once it ended, `error` if it failed."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None):
        self.request = request
        self.result: GenerationResult | None = None
        self.error: BaseException | None = None
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._loop = loop
        self._event = asyncio.Event() if loop is not None else None
        self._cancelled = False
        self._on_cancel = None  # set by the engine: wakes its loop
        self._ended = threading.Event()  # what wait() waits for: a piece does not wake it
        self._wake_scheduled = False  # an event-loop wake-up is on its way: later pieces ride on it

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def cancel(self) -> None:
        """Ask the engine to stop this generation; it frees the slot within one step."""
        if not self._cancelled and not self.done:
            self._cancelled = True
            if self._on_cancel is not None:
                self._on_cancel()

    # -- the engine's side ------------------------------------------------------------------------------------

    def _push(self, item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()  # cheap when no thread reads the pieces
        if self._loop is not None and not self._wake_scheduled:
            self._wake_scheduled = True  # one call_soon_threadsafe per batch of pieces, not per token
            try:
                self._loop.call_soon_threadsafe(self._wake_loop)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

    def _wake_loop(self) -> None:
        self._wake_scheduled = False  # first: a piece pushed from here on schedules another wake-up
        self._event.set()

    def _finish(self, result: GenerationResult | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self._push(_END)
        self._ended.set()

    # -- the caller's side ------------------------------------------------------------------------------------

    def _next(self):
        item = self._items.popleft()
        if item is _END:
            self._items.appendleft(_END)  # stays at the end for any later reader
            if self.error is not None:
                raise self.error
            return _END
        return item

    def __iter__(self) -> Iterator[Piece]:
        try:
            while True:
                with self._cond:
                    while not self._items:
                        self._cond.wait()
                    item = self._next()
                if item is _END:
                    return
                yield item
        finally:
            if not self.done:
                self.cancel()

    async def __aiter__(self) -> AsyncIterator[Piece]:
        if self._event is None:
            raise RuntimeError("submit with loop= to read a stream from asyncio")
        try:
            while True:
                with self._cond:
                    item = self._next() if self._items else None
                    if item is None:
                        self._event.clear()
                if item is _END:
                    return
                if item is not None:
                    yield item
                    continue
                await self._event.wait()
        finally:
            if not self.done:
                self.cancel()

    def wait(self, timeout: float | None = None) -> GenerationResult:
        """Block until the generation ended (pieces not yet read are dropped); its result."""
        if not self._ended.wait(timeout):
            raise TimeoutError("the generation did not end in time")
        if self.error is not None:
            raise self.error
        return self.result
