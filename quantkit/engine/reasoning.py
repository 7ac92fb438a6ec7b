"""Splitting an R1 model's streamed output into its `<think>` reasoning and its answer.

A pure state machine over text pieces (one token's text at a time): tags may arrive split across pieces, the
opening tag may be missing (the prompt already ended with `<think>\\n`), the closing tag may never come (the
thought was cut off), and anything after the end-of-sequence text is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

OPEN = "<think>"
CLOSE = "</think>"

Kind = Literal["thought", "answer"]


@dataclass
class Piece:
    kind: Kind
    text: str
    logprobs: tuple = ()  # the engine's TokenLogprobs of the tokens whose text this piece releases (when asked)


@dataclass
class ReasoningSplitter:
    """Feed text pieces in order; get back the pieces of thought and answer they complete.

    `in_thought=True` when the prompt already opened the thought (the template ends with `<think>\\n`).
    `eos` is the end-of-sequence text, if the stream may carry it; output after it is ignored.
    """

    in_thought: bool = False
    eos: str | None = None
    thought: str = ""
    answer: str = ""
    saw_close: bool = False
    ended: bool = False
    _state: str = field(default="start", init=False)
    _held: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if self.in_thought:
            self._state = "thought"

    def feed(self, text: str) -> list[Piece]:
        if self.ended:
            return []
        self._held += text
        return self._drain(final=False)

    def finish(self) -> list[Piece]:
        """Flush what is held back at the end of the stream."""
        if self.ended:
            return []
        pieces = self._drain(final=True)
        self.ended = True
        return pieces

    @property
    def thought_unfinished(self) -> bool:
        """The stream opened a thought and ended without closing it."""
        return self._state == "thought"

    def _drain(self, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while self._held and not self.ended:
            before = (self._state, self._held)
            self._step(out, final)
            if (self._state, self._held) == before:
                break
        return [p for p in out if p.text]

    def _cut_eos(self, final: bool) -> tuple[str, bool]:
        """The held text up to EOS (if seen), and whether EOS was seen."""
        if self.eos and self.eos in self._held:
            return self._held[: self._held.index(self.eos)], True
        return self._held, False

    def _step(self, out: list[Piece], final: bool) -> None:
        text, eos_seen = self._cut_eos(final)
        markers = [m for m in (self.eos,) if m]
        if self._state == "start":
            stripped = text.lstrip()
            if stripped.startswith(OPEN):
                self._state = "thought"
                self._held = stripped[len(OPEN):] + self._held[len(text):]
                return
            if not eos_seen and not final and (not stripped or OPEN.startswith(stripped)):
                return  # could still become "<think>": wait for more
            self._state = "answer"
            return
        marker = CLOSE if self._state == "thought" else None
        if marker is not None and marker in text:
            at = text.index(marker)
            self._emit(out, text[:at])
            self.saw_close = True
            self._state = "answer"
            self._held = self._held[at + len(marker):]
            return
        keep = 0 if (final or eos_seen) else partial_suffix(text, [*([marker] if marker else []), *markers])
        self._emit(out, text[: len(text) - keep])
        self._held = self._held[len(text) - keep:]
        if eos_seen:
            self._held = ""
            self.ended = True

    def _emit(self, out: list[Piece], text: str) -> None:
        if not text:
            return
        kind: Kind = "thought" if self._state == "thought" else "answer"
        if kind == "answer" and not self.answer:
            text = text.lstrip("\n")  # R1 puts blank lines between </think> and the answer
            if not text:
                return
        if kind == "thought":
            self.thought += text
        else:
            self.answer += text
        out.append(Piece(kind, text))


def partial_suffix(text: str, markers: list[str]) -> int:
    """Length of the longest end of `text` that is the start of a marker (to hold back until decided)."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:n]):
                best = max(best, n)
                break
    return best


def split_reasoning(text: str, in_thought: bool = False) -> tuple[str, str]:
    """(thought, answer) of a whole generation."""
    splitter = ReasoningSplitter(in_thought=in_thought)
    splitter.feed(text)
    splitter.finish()
    return splitter.thought, splitter.answer
