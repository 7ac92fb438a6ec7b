"""llama.cpp's RPC backend: remote `ggml-rpc-server` hosts as devices that libllama offloads layers to.

Adding a server registers its devices in ggml's backend registry for the life of the process (what llama.cpp's
`--rpc` does); every model loaded afterwards splits its offloaded layers over them, RPC devices first, in
proportion to the memory each reports free. The registry's RPC entry points exist only in a build made with
`GGML_RPC=ON`; the pip wheel of llama-cpp-python is built without it.

A server that goes away mid-run makes ggml abort: no error code comes back through libllama, and ggml ends the
process once its abort callback returns. `on_ggml_abort` lets the application say something first (the CLI
says one line and exits 1); the library itself never ends the process.
"""
from __future__ import annotations

import ctypes
import logging
import socket
import threading
from collections.abc import Callable

from ..errors import RPCError
from ._lib import ggml, lib
from .devices import Device, all_devices

log = logging.getLogger(__name__)

RPC_BUILD_HINT = ('install an RPC-capable llama-cpp-python: CMAKE_ARGS="-DGGML_RPC=on" pip install '
                  "--no-cache-dir --force-reinstall llama-cpp-python==0.3.36")
CONNECT_TIMEOUT_S = 5.0

_added: dict[str, list[Device]] = {}
_lock = threading.Lock()
_ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_abort_callback = None  # kept referenced: ggml holds only the raw pointer
_abort_handlers: list[Callable[[str], None]] = []


def supports_rpc() -> bool:
    """Whether this build of llama.cpp has the RPC backend."""
    return bool(lib().llama_supports_rpc())


def parse_endpoints(spec: str) -> list[str]:
    """`HOST:PORT[,HOST:PORT…]` → endpoints, each checked for a host and a port number."""
    endpoints = [e.strip() for e in spec.split(",") if e.strip()]
    if not endpoints:
        raise RPCError(f"--rpc {spec!r} names no server", hint="give HOST:PORT[,HOST:PORT…]")
    for e in endpoints:
        _check_endpoint(e)
    return endpoints


def _check_endpoint(endpoint: str) -> None:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RPCError(f"--rpc endpoint {endpoint!r} is not HOST:PORT", hint="e.g. --rpc 192.168.1.20:50052")


def check_rpc_servers(endpoints: list[str]) -> None:
    """Refuse, before any work, endpoints that are not HOST:PORT, a build without the RPC backend, or a server
    that does not answer; nothing is registered (the load that offloads to them does that)."""
    _check_build(endpoints)
    for endpoint in endpoints:
        if endpoint not in _added:
            _check_reachable(endpoint)


def _check_build(endpoints: list[str]) -> None:
    for endpoint in endpoints:
        _check_endpoint(endpoint)
    if not supports_rpc():
        raise RPCError("this llama.cpp build has no RPC backend", hint=RPC_BUILD_HINT)


def add_rpc_servers(endpoints: list[str]) -> list[Device]:
    """Register each server's devices with ggml (once per endpoint and process); returns them in the order
    libllama uses them. Each server is reached over TCP first, so a dead host is an error, not a hang. ggml's
    registry is process-wide: what was registered is kept here, so that each load may ask for its servers."""
    _check_build(endpoints)
    devices: list[Device] = []
    with _lock:
        for endpoint in endpoints:
            if endpoint not in _added:
                _check_reachable(endpoint)
                _added[endpoint] = _register(endpoint)
            devices += _added[endpoint]
    return devices


def on_ggml_abort(handler: Callable[[str], None]) -> None:
    """Call `handler(message)` when ggml aborts (`message` as ggml words it: `FILE:LINE: WHAT`), in place of
    ggml's own report (a backtrace). ggml ends the process with SIGABRT when the handlers return; a handler
    may end it first, its own way. Handlers are called in the order added, on the thread that aborted."""
    global _abort_callback
    with _lock:
        _abort_handlers.append(handler)
        if _abort_callback is None:
            _abort_callback = _ABORT_CALLBACK(_on_abort)
            g = ggml()
            g.ggml_set_abort_callback.restype = ctypes.c_void_p
            g.ggml_set_abort_callback.argtypes = [_ABORT_CALLBACK]
            g.ggml_set_abort_callback(_abort_callback)


def _on_abort(message: bytes | None) -> None:
    text = (message or b"").decode(errors="replace").strip()
    log.debug("ggml aborted: %s", text)
    for handler in list(_abort_handlers):
        try:
            handler(text)
        except Exception:  # an exception cannot cross back into C: the next handler, then ggml's abort()
            log.exception("the ggml abort handler %r failed", handler)


def _check_reachable(endpoint: str) -> None:
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise RPCError(f"cannot reach the RPC server {endpoint}: {e.strerror or e}",
                       hint=f"start `ggml-rpc-server -H 0.0.0.0 -p {port}` on {host}, or leave it out of --rpc") from None


def _register(endpoint: str) -> list[Device]:
    g = ggml()
    g.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    g.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    g.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    g.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    g.ggml_backend_register.argtypes = [ctypes.c_void_p]
    reg = g.ggml_backend_reg_by_name(b"RPC")
    address = reg and g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server")
    if not address:
        raise RPCError("this llama.cpp build has no RPC backend", hint=RPC_BUILD_HINT)
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)
    before = {d.name for d in all_devices()}
    server = add_server(endpoint.encode())
    if not server:
        raise RPCError(f"the RPC server {endpoint} answered but reported no device",
                       hint="check that it is a ggml-rpc-server of the same llama.cpp version")
    g.ggml_backend_register(server)
    added = [d for d in all_devices() if d.name not in before]
    log.info("RPC server %s: %s", endpoint, ", ".join(f"{d.name} ({_gib(d.memory_free)} free)" for d in added))
    return added


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"
