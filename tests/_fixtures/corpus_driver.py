"""Runs quantkit command lines fast and measures each one honestly: a warm process imports the CLI once, then
forks a child per command line. The child is a real quantkit process from `main()` on: its stdin is /dev/null,
its stdout and stderr are files (so libllama's own writes to fd 2 are caught too), its exit code is what the
shell would see. The parent reports the child's peak resident memory (wait4's ru_maxrss, which counts what the
child inherited at the fork: the interpreter and the imported CLI, about 50 MB) and its wall time, and kills it
past a time limit. The child's address space is capped (ADDRESS_SPACE), so that even an allocation the kernel
would grant without touching it (a read buffer sized by a length field) fails instead of passing unseen.

Protocol: one JSON request per line on stdin ({"args", "cwd", "env", "timeout"}), one JSON reply per line on
stdout ({"code", "signal", "timed_out", "stdout", "stderr", "maxrss_mib", "seconds"}).

`Driver` is the test side: it starts this module with `python -m` and sends requests.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ADDRESS_SPACE = 4 << 30  # a child may map at most this much: an allocation sized by a hostile claim fails at once


def _child(args: list[str], cwd: str, env: dict[str, str], out: int, err: int) -> int:
    import resource

    from quantkit.cli.app import main

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    os.chdir(cwd)
    os.environ.update(env)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.argv = ["quantkit", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BaseException:  # what the interpreter would print on its way out
        import traceback

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return code


def run_one(args: list[str], cwd: str, env: dict[str, str], timeout: float) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(args, cwd, env, out.fileno(), err.fileno())
            finally:
                os._exit(code)
        timed_out = False
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.perf_counter() - start > timeout:
                os.kill(pid, signal.SIGKILL)
                timed_out = True
                _, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.002)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return {"code": os.waitstatus_to_exitcode(status), "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status)
                else None, "timed_out": timed_out, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace"), "maxrss_mib": usage.ru_maxrss / 1024,
                "seconds": seconds}


def _warm() -> None:
    """Import once, before any fork, what every command line needs: the CLI, the parsing machinery typer loads on
    its first parse, and the libraries most commands import lazily (libllama, pandas)."""
    import typer.main

    import quantkit.convert  # noqa: F401
    import quantkit.convert.export  # noqa: F401
    import quantkit.runtime  # noqa: F401
    from quantkit.cli.app import app

    group = typer.main.get_command(app)
    with group.make_context("quantkit", ["inspect", "x.gguf"]) as ctx:
        group.get_command(ctx, "inspect").make_context("inspect", ["x.gguf"], parent=ctx)


def serve() -> None:
    _warm()

    for line in sys.stdin:
        req = json.loads(line)
        reply = run_one(req["args"], req["cwd"], req.get("env", {}), req.get("timeout", 60))
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class Driver:
    """The test side: one warm driver process for many command lines."""

    def __init__(self, env: dict[str, str] | None = None):
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen([sys.executable, "-m", "tests._fixtures.corpus_driver"], cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})

    def run(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"args": args, "cwd": str(cwd), "env": env or {}, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the corpus driver died"
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve()
