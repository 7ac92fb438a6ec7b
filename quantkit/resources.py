"""Objects that hold something until `close()` (a llama.cpp pointer, a thread, a process pool), usable in `with`."""
from __future__ import annotations


class Closeable:
    """`with obj:` closes it at the end of the block; subclasses say what closing means."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
