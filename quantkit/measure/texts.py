"""Texts to score: wikitext-2's `wiki.test.raw` (fetched once from the Hub, kept byte for byte), `python-docs`
(offline), or a user's file.

`python-docs` is English documentation prose that ships with every CPython: the topics of `pydoc_data.topics`
(the text `help()` shows for keywords and statements, ≈465 KB), joined in sorted order. It lets the embedded
demo score a real text offline. It changes with the Python version, so its file name carries that version.

wiki.test.raw is the member `wikitext-2-raw/wiki.test.raw` of `wikitext-2-raw-v1.zip` in the dataset repo
`ggml-org/ci`, the file llama.cpp's own perplexity numbers are computed on. Rebuilding it from other copies of
wikitext does not give the same bytes, hence the same zip.

Calibration texts (for importance matrices) must not be the scored text: `wikitext-2-train` is `wiki.train.raw`
from the same zip; python-docs is split into `python-docs-calibration` (about two thirds) and
`python-docs-heldout` (the rest, the part to score a model calibrated on the other). The split is by paragraph,
not by topic: many topics repeat whole paragraphs of others, so a topic split leaves ~30 % of the held-out
13-grams in the calibration part; with repeated paragraphs kept once, under 1 % remain.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..files import cache_dir
from ..errors import DatasetUnavailableError, InputNotFoundError, InvalidArgumentError
from ..files import atomic_file
from ..hub import hub_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubZipText:
    name: str
    repo_id: str
    filename: str  # the zip in the dataset repo
    member: str  # the text inside the zip

    @property
    def cached_path(self) -> Path:
        return cache_dir("datasets", self.name) / Path(self.member).name


DATASETS = {
    "wikitext-2": HubZipText("wikitext-2", "ggml-org/ci", "wikitext-2-raw-v1.zip", "wikitext-2-raw/wiki.test.raw"),
    "wikitext-2-train": HubZipText("wikitext-2-train", "ggml-org/ci", "wikitext-2-raw-v1.zip",
                                   "wikitext-2-raw/wiki.train.raw"),
}


PYTHON_DOCS = "python-docs"
PYTHON_DOCS_CALIBRATION = "python-docs-calibration"
PYTHON_DOCS_HELDOUT = "python-docs-heldout"
_PYTHON_DOCS_PARTS = (PYTHON_DOCS_CALIBRATION, PYTHON_DOCS_HELDOUT)
DATASET_NAMES = (*DATASETS, PYTHON_DOCS, *_PYTHON_DOCS_PARTS)


def dataset_path(name: str) -> Path:
    """The local copy of dataset `name`, fetched and extracted (or written) the first time."""
    if name == PYTHON_DOCS:
        return python_docs_path()
    if name in _PYTHON_DOCS_PARTS:
        return python_docs_path(part=name.removeprefix(PYTHON_DOCS + "-"))
    if name not in DATASETS:
        raise InvalidArgumentError(f"unknown dataset {name!r}", hint=f"choose one of: {', '.join(DATASET_NAMES)}")
    ds = DATASETS[name]
    dest = ds.cached_path
    if dest.exists():
        return dest
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        zip_path = _download(ds, Path(tmp))
        with atomic_file(dest) as out:
            _extract(ds, zip_path, out)
    log.info("%s ready at %s", ds.name, dest)
    return dest


def python_docs_path(part: str | None = None) -> Path:
    """The python-docs text in quantkit's cache, written the first time; `part` "calibration" or "heldout":
    only the paragraphs of that part, in order, each distinct paragraph once (one is held out when the first
    byte of its SHA-256 is a multiple of 3, so the split does not move when a Python version edits others)."""
    import pydoc_data.topics

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dest = cache_dir("datasets", PYTHON_DOCS) / f"python-{version}-topics{'-' + part if part else ''}.txt"
    if not dest.exists():
        topics = pydoc_data.topics.topics
        text = "\n\n".join(topics[name] for name in sorted(topics))
        if part is not None:
            text = "\n\n".join(_paragraphs(text, held_out=part == "heldout"))
        with atomic_file(dest) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    return dest


def _paragraphs(text: str, held_out: bool) -> list[str]:
    seen: set[str] = set()
    out = []
    for paragraph in text.split("\n\n"):
        key = " ".join(paragraph.split())
        if not key or key in seen:
            continue
        seen.add(key)
        if (hashlib.sha256(key.encode()).digest()[0] % 3 == 0) == held_out:
            out.append(paragraph)
    return out


def _download(ds: HubZipText, folder: Path) -> Path:
    from huggingface_hub import hf_hub_download

    log.info("fetching %s from the Hub dataset %s", ds.filename, ds.repo_id)
    try:
        with _quiet("huggingface_hub"):
            return Path(hf_hub_download(ds.repo_id, ds.filename, repo_type="dataset", local_dir=folder,
                                        **hub_settings()))
    except Exception as e:  # offline, DNS, HTTP errors, a missing file: all mean "not available here"
        log.debug("download failed: %s", e, exc_info=True)
        raise DatasetUnavailableError(
            f"{ds.name} is not cached and could not be downloaded from the Hub dataset {ds.repo_id}") from e


@contextlib.contextmanager
def _quiet(name: str):
    """huggingface_hub logs each retry as a warning; our one error line says it better."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _extract(ds: HubZipText, zip_path: Path, out: Path) -> None:
    try:
        with zipfile.ZipFile(zip_path) as zf, zf.open(ds.member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DatasetUnavailableError(f"{ds.filename} from {ds.repo_id} is damaged or lacks {ds.member}") from e


def read_text(path: str | Path) -> bytes:
    """The bytes llama-perplexity scores for `-f path`: the file as is, less one trailing newline."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    data = path.read_bytes()
    return data[:-1] if data.endswith(b"\n") else data
