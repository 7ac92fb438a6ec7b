"""Rungs of a ladder to serve side by side: the embedded SmolLM2 (a Q4_1 file) requantized by quantkit's own
quantizer to small types, each in its own cached folder, made once."""
from __future__ import annotations

from pathlib import Path

from reference.cache import cached_dir

VERSION = "v1"
TYPES = ("Q4_0", "Q5_0", "Q8_0")
NAME = "SmolLM2-135M-Instruct"


def smollm2_rung(qtype: str) -> Path:
    """SmolLM2 requantized to `qtype` (libllama's allow_requantize: the base is already Q4_1)."""

    def build(folder: Path) -> None:
        from quantkit.convert.embedded import embedded_gguf
        from quantkit.quantize.file import quantize

        quantize(embedded_gguf(), folder / f"{NAME}-{qtype}.gguf", qtype, threads=2, allow_requantize=True)

    return cached_dir(f"smollm2-rung-{qtype}-{VERSION}", build) / f"{NAME}-{qtype}.gguf"


def smollm2_rungs(types: tuple[str, ...] = TYPES) -> list[Path]:
    return [smollm2_rung(t) for t in types]
