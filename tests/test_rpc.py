"""`--rpc`: SmolLM2's layers split over two ggml-rpc-server processes on 127.0.0.1 and the local CPU, through an
RPC-capable llama.cpp built from the sdist (tests/_fixtures/rpc_build.py). The numbers must equal the local run,
the placement must equal the plan, and a dead host must be one line, not a hang."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from quantkit.memory.layers import describe, plan_layers
from tests._fixtures.serve import free_port

GIB = 2**30


# ---- the plan alone (llama.cpp's split rule, worked by hand) ------------------------------------------------------

def test_plan_splits_the_offloaded_layers_by_free_memory():
    # 30 layers + output = 31; 21 offloaded → 0-9 on the CPU; 21 layers over 1:2 memory → cut at 1/3 and 1
    plan = plan_layers(30, 21, [("RPC0", 1 * GIB), ("RPC1", 2 * GIB)])
    assert plan == ["CPU"] * 10 + ["RPC0"] * 7 + ["RPC1"] * 14
    assert describe(plan) == "layers 0-9 CPU · 10-16 RPC0 · 17-30 RPC1"


def test_plan_edges():
    assert plan_layers(4, 0, [("RPC0", GIB)]) == ["CPU"] * 5
    assert plan_layers(4, -1, [("RPC0", GIB)]) == ["RPC0"] * 5
    assert plan_layers(4, 99, [("A", GIB), ("B", GIB)]) == ["A", "A", "A", "B", "B"]  # x = 2/5, 3/5 … < 0.5 → A
    assert plan_layers(4, 3, []) == ["CPU"] * 5


@pytest.mark.slow
def test_a_build_without_rpc_says_how_to_get_one(smollm2_gguf):
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CPP_LIB_PATH"}
    r = _quantkit("perplexity", str(smollm2_gguf), "--rpc", "127.0.0.1:1", env=env)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "no RPC backend" in r.stderr and 'CMAKE_ARGS="-DGGML_RPC=on"' in r.stderr


# ---- --rpc is a parameter of the load; ggml's abort ends the process in the CLI only -------------------------------

@pytest.fixture
def registered(monkeypatch) -> list[list[str]]:
    """What the loads asked ggml's registry for (no server is reached, ggml's abort is left alone)."""
    from quantkit import runtime
    from quantkit.cli import _rpc

    asked: list[list[str]] = []
    monkeypatch.setattr(runtime, "add_rpc_servers", lambda endpoints: asked.append(list(endpoints)) or [])
    monkeypatch.setattr(runtime, "check_rpc_servers", lambda endpoints: None)
    monkeypatch.setattr(_rpc, "exit_on_ggml_abort", lambda: None)
    return asked


def test_the_load_registers_its_servers_and_auto_counts_them(registered, monkeypatch, smollm2_gguf):
    from quantkit import runtime
    from quantkit.runtime import offload

    seen = []
    monkeypatch.setattr(runtime, "gpu_devices", lambda: seen.append(list(registered)) or [])
    assert offload.resolve_gpu_layers("auto", smollm2_gguf, 512, rpc=["127.0.0.1:50052"]) == 0
    assert registered == [["127.0.0.1:50052"]]
    assert seen == [[["127.0.0.1:50052"]]]  # registered before 'auto' looked at the devices
    assert offload.resolve_gpu_layers("auto", smollm2_gguf, 512) == 0 and len(registered) == 1  # none: nothing


@pytest.mark.slow
def test_the_cli_passes_rpc_to_the_load(registered, smollm2_gguf):
    from typer.testing import CliRunner

    from quantkit.cli.app import app

    r = CliRunner().invoke(app, ["bench", str(smollm2_gguf), "-p", "4", "-n", "0", "-r", "1", "--threads", "1",
                                 "-ngl", "0", "--rpc", "127.0.0.1:50052,127.0.0.1:50053", "--json"])
    assert r.exit_code == 0, r.output
    assert registered == [["127.0.0.1:50052", "127.0.0.1:50053"]]


def test_rpc_endpoints_are_checked_by_the_library_too():
    from quantkit.errors import RPCError
    from quantkit.runtime import add_rpc_servers

    with pytest.raises(RPCError, match="is not HOST:PORT"):
        add_rpc_servers(["nohost"])


_ABORT = """
import sys
from quantkit.runtime._lib import ggml
if sys.argv[1] == "cli":
    from quantkit.cli._rpc import exit_on_ggml_abort
    exit_on_ggml_abort()
else:
    from quantkit.runtime import on_ggml_abort
    on_ggml_abort(lambda message: print("seen:", message, flush=True))
ggml().ggml_abort(b"/src/ggml/ggml-rpc.cpp", 7, b"%s", b"remote_tensor != nullptr")
"""


@pytest.mark.slow
def test_a_ggml_abort_is_one_line_and_exit_1_in_the_cli_and_left_to_ggml_in_the_library():
    cli = subprocess.run([sys.executable, "-c", _ABORT, "cli"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1, cli.stderr
    assert cli.stderr == ("error: llama.cpp stopped: remote_tensor != nullptr (ggml-rpc.cpp:7; an RPC server may "
                          "have gone away: check the hosts in --rpc and run again)\n")
    library = subprocess.run([sys.executable, "-c", _ABORT, "library"], capture_output=True, text=True, timeout=60)
    assert library.returncode == -6  # SIGABRT: ggml's own end, after the handler; the library ended nothing
    assert library.stdout == "seen: /src/ggml/ggml-rpc.cpp:7: remote_tensor != nullptr\n"


# ---- for real: two servers, the local CPU -------------------------------------------------------------------------

def _quantkit(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantkit", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def rpc(tmp_path_factory):
    """Two ggml-rpc-server processes and the environment that makes quantkit use the RPC-capable libllama."""
    from tests._fixtures.rpc_build import rpc_build

    build = rpc_build()
    ports = [free_port(), free_port()]
    servers = [subprocess.Popen([str(build / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(p), "-t", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for p in ports:
            _wait_listening(p)
        env = {**os.environ, "LLAMA_CPP_LIB_PATH": str(build)}
        yield {"env": env, "spec": ",".join(f"127.0.0.1:{p}" for p in ports), "servers": servers}
    finally:
        for s in servers:
            s.kill()
            s.wait()


def _wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"ggml-rpc-server did not listen on {port}"
            time.sleep(0.1)


NGL = "21"  # of SmolLM2's 31 (30 + output): 0-9 stay on the CPU; odd, so no layer sits on an even split's edge


@pytest.mark.slow
def test_perplexity_over_rpc_equals_the_local_run_and_the_plan(rpc, smollm2_gguf, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"Line {i} of a text about rivers, bridges and the towns that grew beside them."
                             for i in range(120)))
    common = ["perplexity", str(smollm2_gguf), "--text-file", str(text), "--ctx", "128", "--chunks", "3",
              "--threads", "1", "--json"]
    remote = _quantkit(*common, "--rpc", rpc["spec"], "-ngl", NGL, env=rpc["env"])
    assert remote.returncode == 0, remote.stderr
    local = _quantkit(*common, "-ngl", "0", env=rpc["env"])
    assert local.returncode == 0, local.stderr
    r, l_ = json.loads(remote.stdout)["results"][0], json.loads(local.stdout)["results"][0]
    assert f"{r['ppl']:.4f} ± {r['ppl_err']:.5f}" == f"{l_['ppl']:.4f} ± {l_['ppl_err']:.5f}"
    assert set(l_["placement"]) == {"CPU"}

    plan = _quantkit("estimate-memory", str(smollm2_gguf), "-t", "Q4_1", "--rpc", rpc["spec"], "-ngl", NGL,
                     "--json", env=rpc["env"])
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)["placement"]
    assert r["placement"] == planned  # what libllama did is what estimate-memory said
    assert planned[:10] == ["CPU"] * 10 and {"RPC0", "RPC1"} <= set(planned[10:])
    shown = _quantkit("estimate-memory", str(smollm2_gguf), "-t", "Q4_1", "--rpc", rpc["spec"], "-ngl", NGL,
                      env=rpc["env"])
    assert describe(planned) in shown.stdout


@pytest.mark.slow
def test_chat_over_rpc_gives_the_local_greedy_text(rpc, smollm2_gguf):
    args = ["chat", str(smollm2_gguf), "--prompt", "Name three rivers.", "--temperature", "0", "-n", "24",
            "--threads", "1", "--ctx", "512"]
    remote = _quantkit(*args, "--rpc", rpc["spec"], "-ngl", NGL, env=rpc["env"])
    local = _quantkit(*args, "-ngl", "0", env=rpc["env"])
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    assert remote.stdout == local.stdout and remote.stdout.strip()
    assert "layers 0-9 CPU" in remote.stderr  # the banner names the placement


@pytest.mark.slow
def test_an_unreachable_host_is_one_line(rpc, smollm2_gguf):
    dead = f"127.0.0.1:{free_port()}"
    # the timeout is the guard against waiting on a dead host for ever
    r = _quantkit("perplexity", str(smollm2_gguf), "--rpc", f"{rpc['spec']},{dead}", env=rpc["env"], timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot reach the RPC server {dead}" in r.stderr and "ggml-rpc-server" in r.stderr
    bad = _quantkit("chat", str(smollm2_gguf), "--prompt", "hi", "--rpc", "nohost", env=rpc["env"])
    assert bad.returncode == 1 and "is not HOST:PORT" in bad.stderr


@pytest.mark.slow
def test_a_host_that_dies_mid_run_ends_the_run_with_one_error(smollm2_gguf, tmp_path):
    from tests._fixtures.rpc_build import rpc_build

    build = rpc_build()
    port = free_port()
    server = subprocess.Popen([str(build / "ggml-rpc-server"), "-H", "127.0.0.1", "-p", str(port), "-t", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port)
        text = tmp_path / "text.txt"
        text.write_text("word " * 20000)
        run = subprocess.Popen([sys.executable, "-m", "quantkit", "perplexity", str(smollm2_gguf), "--text-file",
                                str(text), "--ctx", "128", "--threads", "1", "--rpc", f"127.0.0.1:{port}",
                                "-ngl", "all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "LLAMA_CPP_LIB_PATH": str(build)})
        try:
            time.sleep(4)  # loaded and scoring
            server.kill()
            _, err = run.communicate(timeout=60)
        finally:
            run.kill()
            run.wait()
        assert run.returncode == 1, err
        assert "error: llama.cpp stopped:" in err and "--rpc" in err and "Traceback" not in err
        assert "#0 " not in err  # no backtrace
    finally:
        server.kill()
        server.wait()
