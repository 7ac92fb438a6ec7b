"""The text an importance matrix is computed on, kept apart from the text a model is scored on.

Each scoring dataset has a calibration partner that shares none of its documents: wikitext-2's `wiki.train.raw`
for its `wiki.test.raw` (the same zip), python-docs' calibration topics for its held-out topics. What remains
shared (boilerplate lines, quoted code) is measured by `text_overlap` and reported with every imatrix.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..measure.texts import PYTHON_DOCS, PYTHON_DOCS_CALIBRATION, PYTHON_DOCS_HELDOUT, dataset_path, read_text
from ..errors import InvalidArgumentError

# scoring dataset → (its calibration text, the text to score a model calibrated on it)
PAIRS = {
    "wikitext-2": ("wikitext-2-train", "wikitext-2"),
    PYTHON_DOCS: (PYTHON_DOCS_CALIBRATION, PYTHON_DOCS_HELDOUT),
    PYTHON_DOCS_HELDOUT: (PYTHON_DOCS_CALIBRATION, PYTHON_DOCS_HELDOUT),
}
NGRAM = 13  # words per n-gram for the overlap (the size GPT-3's contamination check used)


@dataclass(frozen=True)
class CalibrationText:
    name: str  # what imatrix.datasets records: the dataset name or the file's path
    text: bytes
    scored: str | None  # the dataset to score with, when known


def calibration_text(dataset: str | None = None, text_file: Path | None = None) -> CalibrationText:
    """The calibration text for scoring dataset `dataset` (its partner, never the scored text itself), or the
    user's `text_file` (then nothing is known of the scored text)."""
    if text_file is not None:
        return CalibrationText(str(text_file), read_text(text_file), None)
    dataset = dataset or "wikitext-2"
    if dataset not in PAIRS:
        raise InvalidArgumentError(f"no calibration text is paired with {dataset!r}",
                                   hint=f"choose one of: {', '.join(PAIRS)}, or pass --text-file")
    calibration, scored = PAIRS[dataset]
    return CalibrationText(calibration, read_text(dataset_path(calibration)), scored)


@dataclass(frozen=True)
class Overlap:
    """How much of the scored text also appears in the calibration text."""

    scored: str
    lines: float  # share of the scored text's distinct non-blank lines found verbatim in the calibration text
    ngrams: float  # share of the scored text's word n-grams found in the calibration text
    n_lines: int
    n_ngrams: int
    ngram: int = NGRAM


def text_overlap(calibration: bytes, scored: bytes, scored_name: str = "", n: int = NGRAM) -> Overlap:
    """Lines and word n-grams of `scored` that also occur in `calibration` (whitespace-normalised)."""
    cal_lines = _lines(calibration)
    lines = _lines(scored)
    shared_lines = len(lines & cal_lines)
    cal_grams = _ngram_hashes(calibration, n)
    grams = _ngram_hashes(scored, n)
    shared = int(np.isin(grams, cal_grams, assume_unique=True).sum()) if grams.size else 0
    return Overlap(scored_name, shared_lines / len(lines) if lines else 0.0, shared / grams.size if grams.size else 0.0,
                   len(lines), int(grams.size), n)


def _lines(text: bytes) -> set[str]:
    return {" ".join(line.split()) for line in text.decode("utf-8", errors="replace").splitlines() if line.strip()}


def _ngram_hashes(text: bytes, n: int) -> np.ndarray:
    """The distinct word n-grams of `text`, each as a 64-bit hash."""
    words = text.decode("utf-8", errors="replace").split()
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    # a stable 64-bit hash per word, then a polynomial hash over each window of n words
    word_hash = np.array([int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                          for w in words], dtype=np.uint64)
    out = np.zeros(len(words) - n + 1, dtype=np.uint64)
    mult = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for k in range(n):
            out = out * mult + word_hash[k:len(words) - n + 1 + k]
    return np.unique(out)
