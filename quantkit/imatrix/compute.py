"""An importance matrix for a model, from calibration text to file: what `quantkit imatrix` runs, and the cached
one that `--imatrix auto` asks for (`imatrix_for_base`)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .calibration import CalibrationText, Overlap, calibration_text, text_overlap
from .collect import DEFAULT_BATCH, DEFAULT_CTX, Progress, collect_imatrix
from .format import read_imatrix, write_imatrix

log = logging.getLogger(__name__)

AUTO_DATASET = "wikitext-2"
AUTO_CHUNKS = 128  # 65k tokens at ctx 512: wiki.train.raw whole would be 4,700 chunks, hours for a 7B on a CPU


@dataclass
class ImatrixResult:
    path: Path
    model: Path
    dataset: str  # the calibration text (dataset name or file path)
    n_entries: int
    n_chunks: int
    chunk_size: int
    n_tokens: int  # tokens in the whole calibration text
    seconds: float
    tokens_per_second: float
    overlap: Overlap | None  # with the scored text, when it is known


def compute_imatrix(model: Path, output: Path, *, dataset: str | None = None, text_file: Path | None = None,
                    n_ctx: int = DEFAULT_CTX, n_batch: int = DEFAULT_BATCH, chunks: int | None = None,
                    process_output: bool = False, threads: int | None = None, n_gpu_layers: int | str = "auto",
                    progress: Progress | None = None, rpc: list[str] | None = None) -> ImatrixResult:
    """Compute the importance matrix of the GGUF `model` on the calibration text paired with scoring dataset
    `dataset` (or on `text_file`) and write it to `output` in llama.cpp's GGUF imatrix format."""
    model, output = Path(model), Path(output)
    calibration = calibration_text(dataset, text_file)
    overlap = _overlap(calibration)
    imatrix, stats = collect_imatrix(model, calibration.text, dataset=calibration.name, n_ctx=n_ctx,
                                     n_batch=n_batch, chunks=chunks, process_output=process_output,
                                     threads=threads, n_gpu_layers=n_gpu_layers, progress=progress, rpc=rpc)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_imatrix(imatrix, output)
    log.info("%s: %d tensors from %d chunks of %d tokens of %s", output, len(imatrix.entries), stats.n_chunks,
             n_ctx, calibration.name)
    return ImatrixResult(output, model, calibration.name, len(imatrix.entries), stats.n_chunks, n_ctx,
                         stats.n_tokens, stats.seconds, stats.tokens_per_second, overlap)


def _overlap(calibration: CalibrationText) -> Overlap | None:
    if calibration.scored is None:
        return None
    from ..measure.texts import dataset_path, read_text

    overlap = text_overlap(calibration.text, read_text(dataset_path(calibration.scored)), calibration.scored)
    log.info("calibration %s vs scored %s: %.2f %% of the scored lines and %.2f %% of its %d-word n-grams are "
             "also in the calibration text", calibration.name, calibration.scored, 100 * overlap.lines,
             100 * overlap.ngrams, overlap.ngram)
    return overlap


def imatrix_for_base(base: Path, *, dataset: str | None = AUTO_DATASET, text_file: Path | None = None,
                     n_ctx: int = DEFAULT_CTX, chunks: int | None = AUTO_CHUNKS, threads: int | None = None,
                     n_gpu_layers: int | str = "auto") -> Path:
    """The importance matrix of the F16/BF16/F32 GGUF `base` (what `--imatrix auto` means), computed once and
    kept beside it as `<base>.imatrix-<fingerprint>.gguf`. `dataset` is the scoring dataset the quants will be
    measured on (its calibration partner is used: see calibration.PAIRS); the first `chunks` chunks of it (all
    with None). The fingerprint covers the base file (name, size,
    mtime), the calibration text's bytes and the settings, so a rebuilt base or another text computes anew.
    Safe against two processes asking at once (a lock file beside the base)."""
    base = Path(base)
    calibration = calibration_text(dataset, text_file)
    st = base.stat()
    key = {"base": [base.name, st.st_size, st.st_mtime_ns], "text": hashlib.sha256(calibration.text).hexdigest(),
           "ctx": n_ctx, "chunks": chunks, "batch": DEFAULT_BATCH, "format": 1}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    dest = base.with_name(f"{base.stem}.imatrix-{digest}.gguf")
    with _locked(base.with_name(f".{base.stem}.imatrix.lock")):
        if dest.exists():
            with contextlib.suppress(Exception):
                read_imatrix(dest)
                log.info("using the cached importance matrix %s", dest.name)
                return dest
        compute_imatrix(base, dest, dataset=dataset, text_file=text_file, n_ctx=n_ctx, chunks=chunks,
                        threads=threads, n_gpu_layers=n_gpu_layers)
    return dest


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
