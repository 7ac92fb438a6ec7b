"""One progress measure for a whole job: the work is counted in units (a step for one model is one unit), and
every step reports the share of its current unit that is done. The caller gets `(label, done, total)`."""
from __future__ import annotations

from collections.abc import Callable

Callback = Callable[[str, float, float], None]  # (what is running, units done, units in all)


class JobProgress:
    def __init__(self, callback: Callback | None, total: float):
        self._callback = callback
        self.total = total
        self.done = 0.0
        self._label = ""

    def start(self, label: str) -> None:
        self._label = label
        self._emit(self.done)

    def part(self, fraction: float) -> None:
        """The share of the current unit that is done."""
        self._emit(self.done + min(max(fraction, 0.0), 1.0))

    def finish(self, units: float = 1.0) -> None:
        self.done += units
        self._emit(self.done)

    def _emit(self, done: float) -> None:
        if self._callback is not None:
            self._callback(self._label, done, self.total)
