"""`quantkit serve --ray`: SmolLM2 as two Ray Serve replicas on a local Ray cluster, live on 127.0.0.1 — load with
no failure over both replicas, one replica killed mid-load and restarted by Ray, clean stop."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests._fixtures.serve import Server, free_port

pytest.importorskip("ray.serve", reason="Ray Serve is an optional extra: pip install 'quantkit[ray]'")

pytestmark = pytest.mark.slow

BODY = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8, "temperature": 0}


def _processes_under(root: str) -> list[int]:
    """PIDs whose command line names `root` (the Ray cluster's own temp folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if root in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def ray_tmp():
    root = tempfile.mkdtemp(prefix="qkray", dir="/tmp")  # short: Ray's unix sockets live under it
    try:
        yield root
    finally:
        for pid in _processes_under(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def _scrape(server: Server, tries: int) -> dict[str, dict]:
    """/metrics `tries` times (Ray routes each scrape to one replica): each replica that answered, its pid and
    the chat completions it answered."""
    seen: dict[str, dict] = {}
    for _ in range(tries):
        text = httpx.get(server.base + "/metrics", timeout=30).text
        m = re.search(r'quantkit_replica_info\{replica="([^"]+)",pid="(\d+)"\}', text)
        if m:
            chat = re.search(r'quantkit_requests_total\{endpoint="/v1/chat/completions",status="200"\} (\d+)', text)
            seen[m[1]] = {"pid": int(m[2]), "chat_ok": int(chat[1]) if chat else 0}
    return seen


def _ask(base: str) -> tuple[int, str, str]:
    try:
        r = httpx.post(base + "/v1/chat/completions", json=BODY, timeout=120)
    except httpx.HTTPError as e:
        return 0, "", f"{type(e).__name__}: {e}"
    return r.status_code, r.headers.get("x-quantkit-replica", ""), r.text


def _load(base: str, n: int, concurrency: int = 16, during=None) -> list[tuple[int, str, str]]:
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(_ask, base) for _ in range(n)]
        if during is not None:
            during()
        return [f.result() for f in futures]


def test_two_replicas_serve_load_and_survive_a_killed_replica(smollm2_gguf, ray_tmp, tmp_path):
    port = free_port()
    server = Server(smollm2_gguf, "--ray", "local", "--replicas", "2", "--port", str(port), "--threads", "1",
                    "--ctx", "2048", "--parallel", "4", env={"RAY_TMPDIR": ray_tmp})
    try:
        server.wait_ready()
        first = _load(server.base, 100)
        failures = [r for r in first if r[0] != 200]
        assert not failures, failures[:3]
        by_header = Counter(r[1] for r in first)
        assert len(by_header) == 2 and min(by_header.values()) > 0, by_header
        replicas = _scrape(server, 30)
        assert set(replicas) == set(by_header)
        for name, info in replicas.items():  # each replica's own count: the requests it answered (+ none lost)
            assert info["chat_ok"] == by_header[name], (name, info, by_header)

        victim = next(iter(replicas))

        def kill_one() -> None:
            time.sleep(0.5)  # requests in flight on both
            os.kill(replicas[victim]["pid"], signal.SIGKILL)

        second = _load(server.base, 48, during=kill_one)
        bad = [r for r in second if r[0] != 200]
        for status, _, text in bad:  # what was in flight on the killed replica: a clean error, never a hang
            assert status >= 500 and status != 0, (status, text)
        assert len(bad) < len(second) // 2, f"{len(bad)} of {len(second)} failed: {bad[:2]}"
        print(f"\nkilled replica {victim} mid-load: {len(second) - len(bad)} ok, {len(bad)} failed "
              f"({Counter(s for s, _, _ in bad)})")

        # Ray starts a new replica in its place; once both answer, every request succeeds
        deadline = time.monotonic() + 120
        while True:
            seen = _scrape(server, 20)
            if victim not in seen and len(seen) == 2:
                break
            assert time.monotonic() < deadline, f"Ray did not replace the killed replica: {seen}"
            time.sleep(1)
        third = _load(server.base, 50)
        assert all(r[0] == 200 for r in third), [r for r in third if r[0] != 200][:3]

        # eval --endpoint works against the replicas unchanged
        import subprocess
        import sys

        model_id = httpx.get(server.base + "/v1/models").json()["data"][0]["id"]
        ev = subprocess.run([sys.executable, "-m", "quantkit", "eval", model_id, "--endpoint", server.base + "/v1",
                             "--task", "arith", "--limit", "4", "--max-tokens", "16", "--temperature", "0",
                             "--out", str(tmp_path / "eval"), "--json"], capture_output=True, text=True, timeout=300)
        assert ev.returncode == 0, ev.stderr
        report = json.loads(ev.stdout)
        assert report["problems"] == 4 and len(report["models"]) == 1
        samples = (tmp_path / "eval").rglob("*.jsonl")
        assert sum(len(f.read_text().splitlines()) for f in samples) == 4  # every problem answered by the replicas
        assert server.stop(signal.SIGTERM, timeout=60) == 0, server.stderr
    finally:
        server.__exit__()
    assert not _processes_under(ray_tmp) or _wait_gone(ray_tmp), "Ray's processes outlived the server"


def _wait_gone(root: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while _processes_under(root):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_ray_needs_a_fixed_port(smollm2_gguf, ray_tmp):
    from typer.testing import CliRunner

    from quantkit.cli.app import app

    result = CliRunner().invoke(app, ["serve", str(smollm2_gguf), "--ray", "local", "--port", "0"])
    assert result.exit_code == 1
    assert "needs a fixed --port" in result.output and "Traceback" not in result.output


def test_ray_not_installed_says_how_to_install(smollm2_gguf):
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None; sys.modules['ray.serve'] = None\n"
            "from quantkit.cli.app import main\n"
            f"sys.argv = ['quantkit', 'serve', {str(smollm2_gguf)!r}, '--ray', 'local', '--port', '8099']\n"
            "main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().count("\n") == 0 and 'pip install "quantkit[ray]"' in r.stderr, r.stderr
