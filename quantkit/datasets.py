"""Texts to score: wikitext-2's `wiki.test.raw` (fetched once from the Hub, kept byte for byte), `python-docs`
(offline), or a user's file.

`python-docs` is English documentation prose that ships with every CPython: the topics of `pydoc_data.topics`
(the text `help()` shows for keywords and statements, ≈465 KB), joined in sorted order. It lets the embedded
demo score a real text offline. It changes with the Python version, so its file name carries that version.

wiki.test.raw is the member `wikitext-2-raw/wiki.test.raw` of `wikitext-2-raw-v1.zip` in the dataset repo
`ggml-org/ci`, the file llama.cpp's own perplexity numbers are computed on. Rebuilding it from other copies of
wikitext does not give the same bytes, hence the same zip.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_dir
from .errors import DatasetUnavailableError, InputNotFoundError, InvalidArgumentError
from .files import atomic_file
from .hub import hub_settings

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
}


PYTHON_DOCS = "python-docs"
DATASET_NAMES = (*DATASETS, PYTHON_DOCS)


def dataset_path(name: str) -> Path:
    """The local copy of dataset `name`, fetched and extracted (or written) the first time."""
    if name == PYTHON_DOCS:
        return python_docs_path()
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
