"""Everything the CLI shows goes through here: JSON on stdout, tables on stdout, progress and errors on stderr.

`guard` is the one error table: typed library errors become a one-line message with a hint and exit code 1;
`QUANTKIT_DEBUG=1` lets the traceback through instead.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ..errors import QuantkitError
from ..files import to_json

def _console(to_stderr: bool) -> Console:
    console = Console(stderr=to_stderr, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # piped or captured: wide tables stay readable instead of folding at 80 columns
    return console


stdout = _console(False)
stderr = _console(True)


def debug_enabled() -> bool:
    return os.environ.get("QUANTKIT_DEBUG", "") not in ("", "0")


def emit_json(data: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(to_json(data), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(message: str, hint: str = "", code: int = 1) -> typer.Exit:
    line = f"error: {message}"
    if hint:
        line += f" ({hint})"
    stderr.print(line, markup=False, highlight=False)
    return typer.Exit(code)


def _os_error_message(e: OSError) -> tuple[str, str]:
    where = f": {e.filename}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"no space left on device{where}", "free some space and run again"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}", "check the file's permissions or choose another path"
    if e.errno == errno.ENOENT:
        return f"no such file or folder{where}", "check the path"
    return f"{e.strerror or e}{where}", ""


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Run a command body, turning every expected failure into one clean line and an exit code."""
    if debug_enabled():
        yield
        return
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except QuantkitError as e:
        raise fail(e.message, _hint_with_flag(e)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", "nothing half-written was left behind", code=130) from None
    except OSError as e:
        raise fail(*_os_error_message(e)) from None
    except Exception as e:  # a bug: still one line, with the way to see more
        raise fail(f"internal error: {type(e).__name__}: {e}".splitlines()[0],
                   "run again with QUANTKIT_DEBUG=1 to see the traceback, and report it") from None


def command(fn: Callable) -> Callable:
    """Decorator for command functions: run them under `guard`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with guard():
            return fn(*args, **kwargs)

    return wrapper


class Bars:
    """Progress bars on stderr, shown only on a terminal and gone when done; subclasses say what they count."""

    def __init__(self, *columns, enabled: bool = True):
        self._progress = Progress(*columns, console=stderr, transient=True,
                                  disable=not enabled or not stderr.is_terminal)

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)


class ByteProgress(Bars):
    """A progress bar in bytes on stderr; the library reports through `update(done, total, label)`."""

    def __init__(self, enabled: bool = True):
        super().__init__(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                         TimeRemainingColumn(), enabled=enabled)
        self._tasks: dict[str, Any] = {}

    def update(self, done: int, total: int, label: str = "") -> None:
        task = self._tasks.get(label)
        if task is None:
            task = self._tasks[label] = self._progress.add_task(label, total=total)
        self._progress.update(task, completed=done, total=total)


# the library names the argument at fault (QuantkitError.param); the CLI says which flag sets it
FLAG_OF_PARAM = {"n_ctx": "--ctx", "n_parallel": "--parallel", "max_queue": "--max-queue", "max_tokens": "--n-predict"}


def _hint_with_flag(e: QuantkitError) -> str:
    flag = FLAG_OF_PARAM.get(getattr(e, "param", None) or "")
    if flag is None or flag in e.hint:
        return e.hint
    return f"change {flag}" + (f"; {e.hint}" if e.hint and e.hint != "see --help" else "")

