"""The texts a recipe's perplexity step scores, by name: wikitext-2 (datasets.py) and `python-docs`.

`python-docs` is English documentation prose that ships with every CPython: the topics of `pydoc_data.topics`
(the text `help()` shows for keywords and statements, ≈465 KB), joined in sorted order. It lets the embedded
demo score a real text offline. It changes with the Python version, so its file name carries that version.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from ..cache import cache_dir
from ..datasets import DATASETS, dataset_path
from ..errors import InvalidArgumentError
from ..files import atomic_file

PYTHON_DOCS = "python-docs"


def python_docs_path() -> Path:
    """The python-docs text in quantkit's cache, written the first time."""
    import pydoc_data.topics

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dest = cache_dir("datasets", PYTHON_DOCS) / f"python-{version}-topics.txt"
    if not dest.exists():
        topics = pydoc_data.topics.topics
        text = "\n\n".join(topics[name] for name in sorted(topics))
        with atomic_file(dest) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    return dest


def text_path(dataset: str) -> Path:
    """The local file of a named text (fetched or written the first time)."""
    if dataset == PYTHON_DOCS:
        return python_docs_path()
    if dataset in DATASETS:
        return dataset_path(dataset)
    raise InvalidArgumentError(f"unknown dataset {dataset!r}", hint=f"use {', '.join([*DATASETS, PYTHON_DOCS])}")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
