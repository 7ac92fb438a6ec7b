"""The text side of one generation: token bytes to UTF-8, stop strings, and the thought split from the answer."""
from __future__ import annotations

import codecs

from .reasoning import Piece, ReasoningSplitter, partial_suffix


class GeneratedText:
    """Feed each generated token's bytes; get the pieces (thought or answer) that are now certain. Text that
    could still turn into a stop string is held back; a stop string ends the text and is dropped."""

    def __init__(self, opened_thought: bool, split_reasoning: bool, stop: tuple[str, ...] = ()):
        self.split_reasoning = split_reasoning
        self.stop = tuple(s for s in stop if s)
        self.splitter = ReasoningSplitter(in_thought=opened_thought)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.raw = ""  # everything decoded so far
        self.released = 0  # how much of `raw` has been passed on
        self.stopped = False  # a stop string was found
        self.n_tokens = 0
        self.close_at: int | None = None  # tokens generated when `</think>` had been seen

    def feed(self, piece: bytes) -> list[Piece]:
        self.n_tokens += 1
        self.raw += self._decoder.decode(piece)
        return self._release(final=False)

    def finish(self) -> list[Piece]:
        """The end of the generation: flush what was held back."""
        if not self.stopped:
            self.raw += self._decoder.decode(b"", final=True)
        pieces = self._release(final=True)
        return pieces + self._split_final()

    @property
    def text(self) -> str:
        return self.raw[: self.released]

    @property
    def in_thought(self) -> bool:
        """The text so far ends inside an open thought."""
        return not self.stopped and self.splitter.thought_unfinished

    @property
    def counts(self) -> tuple[int, int]:
        """(thought tokens, answer tokens): the tokens up to the one that completed `</think>` are thought."""
        if self.close_at is not None:
            return self.close_at, self.n_tokens - self.close_at
        if self.splitter.thought_unfinished or (self.splitter.in_thought and not self.splitter.answer):
            return self.n_tokens, 0
        return 0, self.n_tokens

    def _release(self, final: bool) -> list[Piece]:
        if self.stopped:
            return []
        start, end = self.released, len(self.raw)
        if self.stop:
            search_from = max(0, start - max(len(s) for s in self.stop) + 1)
            hits = [i for s in self.stop if (i := self.raw.find(s, search_from)) != -1]
            if hits:
                end = max(start, min(hits))
                self.raw = self.raw[:end]
                self.stopped = True
            elif not final:
                end -= partial_suffix(self.raw[start:], list(self.stop))
        self.released = end
        return self._split(self.raw[start:end])

    def _split(self, text: str) -> list[Piece]:
        if not text:
            return []
        pieces = self.splitter.feed(text)
        if self.close_at is None and self.splitter.saw_close:
            self.close_at = self.n_tokens
        return pieces if self.split_reasoning else [Piece("answer", text)]

    def _split_final(self) -> list[Piece]:
        pieces = self.splitter.finish()
        return pieces if self.split_reasoning else []
