"""The models a router serves: every GGUF named on the command line or found in a folder (a `quantkit run` output,
a convert folder), each with its id (the file stem), size, type, bits per weight and, when a run's report.json
lies beside it, that rung's PPL, KLD and pass@1. Only headers are read here; nothing is loaded."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidArgumentError
from ..gguf.reader import GGUFFile, file_type_name, read_gguf
from ..gguf.shards import find_shards

log = logging.getLogger(__name__)

REPORT = "report.json"
SCORES = ("ppl", "delta_ppl_pct", "mean_kld", "same_top_pct", "pass_at_1")  # what /v1/models repeats from a report


@dataclass
class ModelFile:
    id: str
    gguf: GGUFFile
    size_bytes: int
    type: str | None
    bpw: float
    n_params: int
    architecture: str
    scores: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.gguf.first_shard

    def describe(self) -> dict:
        return {"file": self.path.name, "size_bytes": self.size_bytes, "type": self.type, "bpw": self.bpw,
                "n_params": self.n_params, "architecture": self.architecture, **self.scores}


def find_models(paths: list[Path]) -> list[ModelFile]:
    """Every model under `paths` (files and folders), in the order named; ids made unique. Raises
    InvalidArgumentError for a path that does not exist or a folder with no model."""
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise InvalidArgumentError(f"{path} does not exist", hint="name GGUF files or folders holding them")
        found = [path] if path.is_file() else _ggufs_in(path)
        if not found:
            raise InvalidArgumentError(f"{path} holds no GGUF model")
        files.extend(p for p in found if p not in files)
    models = [m for m in map(_model_file, files) if m is not None]
    if not models:
        raise InvalidArgumentError("no model to serve among " + ", ".join(map(str, paths)))
    _unique_ids(models)
    return models


def _ggufs_in(folder: Path) -> list[Path]:
    """The GGUFs of a folder and its subfolders, a split model by its first shard only."""
    out = []
    for path in sorted(folder.rglob("*.gguf")):
        shards = find_shards(path)
        if shards is None or shards[0] == path:
            out.append(path)
    return out


def _model_file(path: Path) -> ModelFile | None:
    gguf = read_gguf(path)  # a file that is not a GGUF fails here, before the socket opens
    header = gguf.header
    if header.get("general.type") not in (None, "model"):  # an imatrix, an adapter, a projector
        log.info("skipping %s: its general.type is %s", path, header.get("general.type"))
        return None
    from ..gguf.header import tensor_bytes

    n_params = sum(t.n_elements for t in header.tensors)
    n_bytes = sum(tensor_bytes(t.type, t.shape) for t in header.tensors)
    stem = gguf.first_shard.name.removesuffix(".gguf")
    if len(gguf.shards) > 1:
        stem = stem.rsplit("-00001-of-", 1)[0]
    return ModelFile(id=stem, gguf=gguf, size_bytes=header.file_size or path.stat().st_size,
                     type=file_type_name(header.get("general.file_type")),
                     bpw=round(8 * n_bytes / n_params, 3) if n_params else 0.0, n_params=n_params,
                     architecture=header.get("general.architecture", "unknown"),
                     scores=_report_scores(gguf.first_shard))


def _unique_ids(models: list[ModelFile]) -> None:
    """Two files with the same stem (two runs' Q4_K_M) are told apart by their folder's name."""
    seen: dict[str, int] = {}
    for m in models:
        seen[m.id] = seen.get(m.id, 0) + 1
    for m in models:
        if seen[m.id] > 1:
            m.id = f"{m.path.parent.name}/{m.id}"
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError("two models have the same id: " + ", ".join(sorted({i for i in ids
                                                                                         if ids.count(i) > 1})))


def _report_scores(path: Path) -> dict:
    """The rung's figures from the report.json of the run whose output holds `path` (its folder or one above)."""
    for folder in (path.parent, path.parent.parent):
        report = folder / REPORT
        if not report.is_file():
            continue
        try:
            rows = json.loads(report.read_text(encoding="utf-8")).get("rows", [])
        except (OSError, ValueError, AttributeError) as e:
            log.warning("ignoring %s: %s", report, e)
            return {}
        for row in rows:
            if isinstance(row, dict) and row.get("file") == path.name:
                return {k: row[k] for k in SCORES if row.get(k) is not None}
        return {}
    return {}
