"""What every way of serving does around its app: the warning when anyone who can reach the address may use it,
the socket bound before the model loads, and the server run until a signal stops it."""
from __future__ import annotations

import os
import socket

from ._output import stderr


def warn_if_open(host: str, api_key: str | None) -> None:
    from ..serve import is_loopback

    if api_key is None and not is_loopback(host):
        stderr.print(f"warning: serving on {host} without an API key: anyone who can reach it may use it "
                     "(pass --api-key or set QUANTKIT_API_KEY)", style="yellow", highlight=False)


def listen(host: str, port: int, api_key: str | None) -> tuple[socket.socket, str]:
    """The bound socket and the API's base URL as it is reached (`http://HOST:PORT/v1`)."""
    from ..serve import bind

    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    warn_if_open(host, api_key)
    return sock, f"http://{shown}:{bound_port}/v1"


def run_until_stopped(app, sock: socket.socket) -> None:
    from ..serve import run_server

    run_server(app, sock, access_log=bool(os.environ.get("QUANTKIT_ACCESS_LOG")))
    stderr.print("quantkit serve: stopped", style="dim", highlight=False)
