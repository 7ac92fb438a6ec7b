"""Keeping a thought under control: a budget of thought tokens, and a guard against a thought that repeats itself.

When the thought has produced `budget` tokens without closing, or the loop guard finds it repeating, the engine
appends the closing text (a short sentence, then `</think>\\n\\n`) as forced tokens: decoded into the KV cache
like sampled ones and passed through the same text path, so `</think>` flips the split and the answer follows in
the same generation. Budget 0 puts an empty thought in the prompt instead (engine/prompt.py).

The loop guard's rule: the same span of LOOP_SPAN thought tokens occurring LOOP_REPEATS times (occurrences may
overlap: a phrase of p < LOOP_SPAN tokens said over and over is found after LOOP_SPAN + 2p tokens). Its
false-positive rate on real generations is measured by benchmarks/loop_guard.py (see the README).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidArgumentError
from .reasoning import CLOSE

LOOP_GUARD_MODES = ("end", "stop", "off")  # end: close the thought like a budget; stop: end the generation
LOOP_SPAN = 32
LOOP_REPEATS = 3
BUDGET_MESSAGE = "\n\nI have thought long enough; I must give my answer now.\n"
EMPTY_THOUGHT = "\n" + CLOSE + "\n\n"  # after the template's `<think>\n`: the prompt carries `<think>\n\n</think>\n\n`


def closing_text(message: str) -> str:
    """What closes a thought the engine ends: the message, then `</think>` and the blank line R1 writes."""
    return message + CLOSE + "\n\n"


@dataclass(frozen=True)
class Thinking:
    """How a request's thought is kept under control. `budget`: the most thought tokens before the engine closes
    it (None: no limit; 0: no thought at all); `message`: the sentence before the forced `</think>`;
    `loop_guard`: what to do with a thought that repeats itself."""

    budget: int | None = None
    message: str = BUDGET_MESSAGE
    loop_guard: str = "off"

    def __post_init__(self) -> None:
        check_budget(self.budget)
        if self.loop_guard not in LOOP_GUARD_MODES:
            raise InvalidArgumentError(f"the loop guard must be one of {', '.join(LOOP_GUARD_MODES)}, not "
                                       f"{self.loop_guard!r}", param="loop_guard")

    @property
    def active(self) -> bool:
        return self.budget is not None or self.loop_guard != "off"


def check_budget(budget: int | None, name: str = "--reasoning-budget") -> None:
    if budget is not None and budget < 0:
        raise InvalidArgumentError(f"{name} must be ≥ 0 thought tokens, not {budget}", param="reasoning_budget")


@dataclass
class LoopDetector:
    """Feed the thought's token ids one by one; `feed` is True once some span of `span` tokens has occurred
    `repeats` times. Each window is kept as a hash, so memory grows by one int per thought token."""

    span: int = LOOP_SPAN
    repeats: int = LOOP_REPEATS
    tokens: list[int] = field(default_factory=list)
    _seen: dict[int, int] = field(default_factory=dict)

    def feed(self, token: int) -> bool:
        self.tokens.append(token)
        if len(self.tokens) < self.span:
            return False
        key = hash(tuple(self.tokens[-self.span:]))
        count = self._seen.get(key, 0) + 1
        self._seen[key] = count
        return count >= self.repeats


def find_loop(tokens, span: int = LOOP_SPAN, repeats: int = LOOP_REPEATS) -> int | None:
    """How many tokens of `tokens` the guard reads before it fires, or None (for measuring it offline)."""
    detector = LoopDetector(span, repeats)
    for i, token in enumerate(tokens):
        if detector.feed(int(token)):
            return i + 1
    return None
