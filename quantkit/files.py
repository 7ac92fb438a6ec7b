"""What quantkit writes and where: safe output, the cache folder, results as JSON.

Safe output: nothing that looks finished is left behind unless it is finished. Files and folders are written under a temporary name in the destination folder and renamed into place only
when complete; on any error or Ctrl-C the temporary is removed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError

WriteProgress = Callable[[int, int, str], None]  # (bytes written, bytes in all, what is being written)
log = logging.getLogger(__name__)


def _temp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.partial-{os.getpid()}")


def remove_stale_partials(folder: Path, name: str | None = None) -> None:
    """Remove the temporaries (`.NAME.partial-PID`) that a process killed outright (SIGKILL, power loss) had no
    chance to remove; those of a process still running are left to it. `name`: only those of this output."""
    for path in Path(folder).glob(f".{'*' if name is None else glob.escape(name)}.partial-*"):
        pid = path.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a process that was killed", path.name)
            _remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_dir(folder: Path) -> Path:
    """Create `folder` (and parents) and check that it is writable, with a clear error otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder} exists and is not a folder") from None
    except NotADirectoryError:
        blocker = next((p for p in folder.parents if p.exists()), folder.parent)
        raise OutputError(f"cannot create {folder}: {blocker} is not a folder") from None
    except PermissionError:
        raise OutputError(f"cannot create {folder}: permission denied") from None
    except OSError as e:
        raise OutputError(f"cannot create {folder}: {e.strerror}") from None
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise OutputError(f"cannot write to {folder}: it is on a read-only file system")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {folder}: permission denied")
    return folder


@contextlib.contextmanager
def output_dir(folder: Path) -> Iterator[Path]:
    """`prepare_dir(folder)` for the block, undone if the block fails: the folders it created are removed again
    while they are empty, so a command that fails before writing anything leaves no trace."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield prepare_dir(folder)
    except BaseException:
        if created and created[0].is_dir():  # the empty folders the block made inside go too
            for sub, _, _ in sorted(os.walk(created[0]), key=lambda entry: -len(entry[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(sub)
        for path in created[1:]:
            try:
                path.rmdir()
            except OSError:  # not empty (something finished is kept), or never made
                break
        raise


def check_free_space(folder: Path, needed: int, margin: float = 1.05) -> None:
    """Refuse to start a write of `needed` bytes that cannot fit in `folder`'s file system."""
    free = shutil.disk_usage(folder).free
    if needed * margin > free:
        raise OutputError(
            f"not enough disk space in {folder}: {needed / 2**30:.2f} GiB needed, {free / 2**30:.2f} GiB free",
            hint="free some space or choose another output folder",
        )


def _os_error(dest: Path, e: OSError) -> OutputError:
    if e.errno == errno.ENOSPC:
        return OutputError(f"the disk filled up while writing {dest}", hint="free some space and run again")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {dest}: {e.strerror}")
    return OutputError(f"cannot write {dest}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_file(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it to `dest` when the block ends without error."""
    dest = Path(dest)
    tmp = _temp_name(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    except OSError as e:
        _remove(tmp)
        raise _os_error(dest, e) from e
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(dest: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `dest`; it becomes `dest` when the block ends without error."""
    dest = Path(dest)
    tmp = _temp_name(dest)
    _remove(tmp)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if dest.exists():
            if not overwrite:
                raise OutputError(f"{dest} already exists", hint="remove it, or pass --force to replace it")
            _remove(dest)
        os.replace(tmp, dest)
    except OSError as e:
        _remove(tmp)
        raise _os_error(dest, e) from e
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ---- where: the cache ---------------------------------------------------------------------------------------

def cache_dir(*parts: str) -> Path:
    """Where quantkit keeps what it fetches and makes once: `$QUANTKIT_CACHE`, else `$XDG_CACHE_HOME/quantkit`,
    else `~/.cache/quantkit` (tests point QUANTKIT_CACHE elsewhere)."""
    root = os.environ.get("QUANTKIT_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) / "quantkit" if xdg else Path.home() / ".cache" / "quantkit"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- results as JSON: what `--json` prints and what `quantkit run` stores are the same ----------------------

def to_json(data: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return to_json(dataclasses.asdict(data))
    if isinstance(data, dict):
        return {str(k): to_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [to_json(v) for v in data]
    if isinstance(data, os.PathLike):
        return os.fspath(data)
    if hasattr(data, "item") and callable(data.item):  # numpy scalars
        return data.item()
    return data
