"""The embedded default model, through quantkit's own fetch (the code under test is also the fixture)."""
from __future__ import annotations

from pathlib import Path

from quantkit.convert.embedded import embedded_gguf


def smollm2_gguf() -> Path:
    return embedded_gguf()
