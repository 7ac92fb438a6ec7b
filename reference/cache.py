from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def test_cache(*parts: str) -> Path:
    root = Path(os.environ.get("QUANTKIT_TEST_CACHE", Path.home() / ".cache" / "quantkit-tests"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(path: Path):
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached_dir(name: str, build: Callable[[Path], None]) -> Path:
    """`test_cache()/name`, built by `build(tmp_folder)` once; a half-built folder is never reused."""
    dest = test_cache() / name
    with _locked(dest):
        if (dest / ".complete").exists():
            return dest
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        (tmp / ".complete").touch()
        tmp.rename(dest)
    return dest
