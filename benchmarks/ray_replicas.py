"""`quantkit serve --ray`: aggregate generated tokens/s with 1 and with 2 Ray Serve replicas of the same model,
on a local Ray cluster, under the same load (N chat requests at concurrency C, greedy, a fixed max_tokens), each
replica with --threads T. On a 2-core machine expect little: two replicas share the same cores. Never imported
by the package.

    python benchmarks/ray_replicas.py [MODEL.gguf] [--requests 64] [--concurrency 16] [--max-tokens 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve import free_port  # noqa: E402


def _start(model: Path, replicas: int, args, ray_tmp: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "quantkit", "serve", str(model), "--ray", "local", "--replicas", str(replicas),
           "--port", str(port), "--threads", str(args.threads), "--parallel", "8", "--ctx", "4096",
           "--n-gpu-layers", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_TMPDIR": ray_tmp})
    for line in proc.stderr:
        if re.search(r"^ready: ", line):
            return proc, f"http://127.0.0.1:{port}"
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def _load(base: str, args) -> tuple[float, int]:
    body = {"messages": [{"role": "user", "content": "Write a sentence about rivers."}],
            "max_tokens": args.max_tokens, "temperature": 0}

    def ask(_):
        r = httpx.post(base + "/v1/chat/completions", json=body, timeout=300)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        tokens = sum(pool.map(ask, range(args.requests)))
    return time.perf_counter() - t0, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from quantkit.convert.embedded import embedded_gguf

    model = args.model or embedded_gguf()
    print(f"model: {model.name}; {os.cpu_count()} CPUs; {args.requests} chat requests at concurrency "
          f"{args.concurrency}, greedy, at most {args.max_tokens} tokens; --threads {args.threads} per replica\n")
    print("| replicas | seconds | generated tokens | aggregate tokens/s |")
    print("|---:|---:|---:|---:|")
    rates = {}
    for replicas in (1, 2):
        with tempfile.TemporaryDirectory(prefix="qkray", dir="/tmp") as ray_tmp:
            proc, base = _start(model, replicas, args, ray_tmp)
            try:
                _load(base, argparse.Namespace(**{**vars(args), "requests": 4}))  # warm both replicas' caches
                seconds, tokens = _load(base, args)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        rates[replicas] = tokens / seconds
        print(f"| {replicas} | {seconds:.1f} | {tokens} | {rates[replicas]:.1f} |", flush=True)
    print(f"\nratio 2 replicas / 1: {rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
