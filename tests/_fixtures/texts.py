"""Texts to score in tests, from quantkit's own offline `python-docs` dataset (English prose that every CPython
ships), so that no test depends on a file only some systems have."""
from __future__ import annotations

import os
from pathlib import Path

from reference.cache import test_cache


def english_text(n_bytes: int = 40_000) -> Path:
    """The first `n_bytes` or so of python-docs, cut at a line end, in a file of its own."""
    from quantkit.measure.texts import python_docs_path

    data = python_docs_path().read_bytes()
    cut = data.rfind(b"\n", 0, n_bytes) + 1
    assert cut > n_bytes // 2
    path = test_cache("texts") / f"{python_docs_path().stem}-{n_bytes}.txt"
    if not path.exists() or path.read_bytes() != data[:cut]:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data[:cut])
        tmp.replace(path)
    return path
