"""`--rpc`, the CLI's part: the flag parsed into the endpoints the library's loading calls take, and the ending of
the process when ggml aborts. A server that goes away mid-run makes ggml abort (no error code comes back
through libllama); the library only reports it, the CLI ends the run with one line and exit code 1 instead of
ggml's backtrace and SIGABRT."""
from __future__ import annotations

import os

_exit_installed = False


def rpc_endpoints(spec: str | None) -> list[str] | None:
    """`--rpc HOST:PORT[,…]` → the endpoints (None without the flag), each server checked to answer before any
    work (the loads register them); with servers, a ggml abort ends the run with one line."""
    if not spec:
        return None
    from ..runtime import check_rpc_servers, parse_endpoints

    endpoints = parse_endpoints(spec)
    check_rpc_servers(endpoints)
    exit_on_ggml_abort()
    return endpoints


def exit_on_ggml_abort() -> None:
    global _exit_installed
    if not _exit_installed:
        from ..runtime import on_ggml_abort

        on_ggml_abort(_exit)
        _exit_installed = True


def abort_line(message: str) -> str:
    """ggml's `FILE:LINE: WHAT` as the CLI's one line."""
    where, _, what = message.rpartition(": ")
    return (f"error: llama.cpp stopped: {what} ({where.rsplit('/', 1)[-1]}; an RPC server may have gone away: "
            "check the hosts in --rpc and run again)")


def _exit(message: str) -> None:
    # on the thread ggml aborted on, perhaps holding locks the console needs: a raw write, then out at once
    os.write(2, (abort_line(message) + "\n").encode())
    os._exit(1)
