"""A live `quantkit serve` subprocess on 127.0.0.1 (a free port the server picks itself), for tests that talk to it
with the real `openai` client and httpx."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

START_TIMEOUT = 180.0  # seconds to load a model on a busy 2-core machine


def free_port() -> int:
    """A port nothing listens on now, for servers that cannot pick their own (Ray Serve, ggml-rpc-server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path | list[Path], *args: str, api_key: str | None = None, env: dict | None = None):
        models = [str(m) for m in (model if isinstance(model, (list, tuple)) else [model])]
        cmd = [sys.executable, "-m", "quantkit", "serve", *models, "--host", "127.0.0.1", "--port", "0",
               "--n-gpu-layers", "0", *args]
        environment = {**os.environ, **(env or {})}
        environment.pop("QUANTKIT_API_KEY", None)
        if api_key is not None:
            environment["QUANTKIT_API_KEY"] = api_key
        self.api_key = api_key
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=environment)
        self.stderr_lines: list[str] = []
        self._url = threading.Event()
        self.base = ""
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.stdout = ""

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if not self.base and (m := re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)):
                self.base = f"http://127.0.0.1:{m.group(1)}"
                self._url.set()
        self._url.set()

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def wait_ready(self) -> "Server":
        if not self._url.wait(START_TIMEOUT) or not self.base:
            raise AssertionError(f"the server did not start:\n{self.stderr}")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.stderr}")
            if httpx.get(self.base + "/health").status_code == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"the model did not load in time:\n{self.stderr}")

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def openai(self, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.base + "/v1", api_key=self.api_key or "unused", max_retries=0, **kwargs)

    def async_openai(self, **kwargs):
        import openai

        return openai.AsyncOpenAI(base_url=self.base + "/v1", api_key=self.api_key or "unused", max_retries=0,
                                  **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.post(self.base + path, headers=headers, timeout=120, **kwargs)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, by name with its labels."""
        r = httpx.get(self.base + "/metrics", headers=self.headers)
        r.raise_for_status()
        samples = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def wait_idle(self, timeout: float = 10.0) -> dict[str, float]:
        """/metrics once no slot is busy and nothing waits."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if m["quantkit_slots_busy"] == 0 and m["quantkit_requests_waiting"] == 0 and "quantkit_kv_cells_llama" in m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"the server is not idle: {m}")
            time.sleep(0.05)

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` (None: it was sent already) and wait for the exit code."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the server did not stop within {timeout} s:\n{self.stderr}")
        self.stdout = self.proc.stdout.read()
        return self.proc.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start(model: Path | list[Path], *args: str, **kwargs) -> Server:
    server = Server(model, *args, **kwargs)
    try:
        return server.wait_ready()
    except BaseException:
        server.__exit__()
        raise
