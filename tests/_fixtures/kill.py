"""Killing a quantkit command outright (SIGKILL: no handler runs, as on a power cut or an OOM kill) at a chosen
moment, seen from outside: the test waits until the command's output folder shows the moment (a temporary appears,
a file in it reaches some size), then kills it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def start(args: list[str], cwd: Path | None = None) -> subprocess.Popen:
    """`quantkit ARGS` in a process of its own."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "quantkit", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(proc: subprocess.Popen, ready: Callable[[], T | None], what: str, seconds: float = 180) -> T:
    """Wait until `ready()` returns something (polled every 2 ms), SIGKILL the process, and return it. The
    process is killed even when the wait fails, so no command is left running."""
    deadline = time.monotonic() + seconds
    try:
        while (found := ready()) is None:
            assert proc.poll() is None, f"the command ended before {what}"
            assert time.monotonic() < deadline, f"no {what} after {seconds:.0f} s"
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the command ended by itself ({proc.returncode}) around {what}"
    return found


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process from /proc/PID/stat, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])  # the fields after the command's name: state, ppid, … starttime


def descendants(pid: int) -> dict[int, int]:
    """Every living process whose parent chain leads to `pid`, by pid → start time (which tells a pid reused
    later from the same process)."""
    stats = {int(p.name): st for p in Path("/proc").iterdir() if p.name.isdigit() and (st := _stat(int(p.name)))}
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in stats.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = stats[child][2]
        todo += children.get(child, [])
    return found


def still_alive(processes: dict[int, int]) -> list[int]:
    """The processes of `descendants()` that still run (a zombie has ended: it only waits to be reaped)."""
    return [pid for pid, start in processes.items()
            if (st := _stat(pid)) is not None and st[2] == start and st[1] not in "ZX"]


def temporaries(folder: Path) -> list[Path]:
    """The `.NAME.partial-PID` temporaries quantkit writes under (quantkit.files)."""
    return sorted(folder.rglob(".*.partial-*")) if folder.is_dir() else []


def same_bytes(a: Path, b: Path) -> list[str]:
    """The files that differ between two folders (or two files); [] when they are the same, byte for byte."""
    if a.is_file() or b.is_file():
        return [] if a.read_bytes() == b.read_bytes() else [a.name]
    names = sorted({p.relative_to(a) for p in a.rglob("*") if p.is_file()} |
                   {p.relative_to(b) for p in b.rglob("*") if p.is_file()})
    return [str(n) for n in names if not ((a / n).is_file() and (b / n).is_file() and _same(a / n, b / n))]


def _same(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while chunk := fa.read(1 << 24):
            if chunk != fb.read(1 << 24):
                return False
    return True
