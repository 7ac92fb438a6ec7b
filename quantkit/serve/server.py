"""Running the app on uvicorn: the socket bound before the model loads, and a clean stop on SIGINT/SIGTERM.

On a signal the server stops accepting connections, answers 503 to new requests on open ones, lets requests in
flight finish for `shutdown_grace` seconds, cancels the rest (each stream ends with an error event), closes the
engine and returns, so that the process exits 0. A second Ctrl-C skips the wait.
"""
from __future__ import annotations

import ipaddress
import signal
import socket

from fastapi import FastAPI

HANDLED = (signal.SIGINT, signal.SIGTERM)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), for `run`; OSError if the address is taken."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # clients that come before uvicorn runs wait in the backlog instead of being refused
    except BaseException:
        sock.close()
        raise
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(app: FastAPI, sock: socket.socket, access_log: bool = False) -> None:
    """Serve `app` on `sock` until SIGINT/SIGTERM; raise the load error if the model failed to load."""
    import uvicorn

    backend = app.state.backend

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            backend.begin_shutdown()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_config=None, log_level=None, access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=backend.config.shutdown_grace + 5)
    server = Server(config)

    def stop(error: BaseException) -> None:
        server.should_exit = True

    backend.on_load_failed = stop
    # uvicorn raises the signal it caught again once it has shut down, to the handler that was there before it:
    # a no-op here, so that a clean stop exits 0
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in HANDLED}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if backend.load_error is not None:
        raise backend.load_error
