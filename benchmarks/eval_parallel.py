"""`quantkit eval` generation tokens/s with --parallel 8 against --parallel 1 on the same file, task and settings
(issue #13's target: ≥ 3×), and against the same eval sent to llama.cpp's llama-server with 8 slots (`-np 8`)
through `--endpoint` (issue #23's target: the engine ≥ 1.0× that). k samples per problem (`--samples`, default
4: the engine evaluates each problem's prompt once and copies its cells to the other samples), greedy, so every
run generates the same answers; each run writes its samples to a fresh temporary folder. tokens/s: generated
tokens over the wall time of the eval call (the model's load and the server's start-up outside it: the server
is started and warmed up first). Never imported by the package.

    python benchmarks/eval_parallel.py [MODEL.gguf] [--limit 16] [--samples 4] [--max-tokens 96] [--threads N]
           [--rounds 1] [--no-server]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve import Server, free_port, start, stop, wait_ready
from reference.llama_tools import build_tool


def run(model: Path | str, parallel: int, args, endpoint: str | None = None) -> tuple[float, int, float]:
    from quantkit.eval.runner import Protocol, evaluate
    from quantkit.eval.tasks import arith_problems

    protocol = Protocol(samples=args.samples, temperature=0, max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = evaluate([model], arith_problems(count=args.limit), "arith", protocol, out_dir=out,
                          parallel=parallel, n_ctx=args.ctx, n_gpu_layers=0, threads=args.threads,
                          endpoint=endpoint)
        seconds = time.perf_counter() - t0
    s = result.models[0].summary
    return s.generated_tokens / seconds, s.generated_tokens, s.pass_at_1.value


def llama_server(model: Path, args) -> Server:
    """llama-server with 8 slots over the same total context as the engine's (`-c` is shared by the slots)."""
    cmd = [str(build_tool("llama-server")), "-m", str(model), "--host", "127.0.0.1", "--port", str(free_port()),
           "-t", str(args.threads), "-tb", str(args.threads), "-c", str(args.ctx), "-np", "8", "-ngl", "0",
           "--no-webui", "-a", "model"]
    return Server("llama-server -np 8", cmd, "/health", "llama-server (sdist 0.3.36)", " ".join(cmd[3:]),
                  port=int(cmd[cmd.index("--port") + 1]))


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4, help="samples per problem (k)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 2, 2))
    parser.add_argument("--rounds", type=int, default=1, help="runs of each configuration, taking turns (mean)")
    parser.add_argument("--no-server", action="store_true", help="quantkit's two configurations only")
    args = parser.parse_args()
    from quantkit import runtime
    from quantkit.convert.embedded import embedded_gguf

    model = args.model or embedded_gguf()
    server = None
    if not args.no_server:
        server = llama_server(model, args)
        scratch = Path(tempfile.mkdtemp(prefix="eval-parallel-"))
        start(server, scratch)
    try:
        configs = {"quantkit --parallel 1": lambda: run(model, 1, args),
                   "quantkit --parallel 8": lambda: run(model, 8, args)}
        if server is not None:
            wait_ready(server, 300)
            configs["llama-server -np 8 (--endpoint)"] = lambda: run("model", 8, args, server.url + "/v1")
        rates: dict[str, list[float]] = {name: [] for name in configs}
        facts: dict[str, tuple[int, float]] = {}
        loads = []
        for _ in range(args.rounds):
            before = load()
            for name, config in configs.items():
                rate, tokens, accuracy = config()
                rates[name].append(rate)
                facts[name] = (tokens, accuracy)
            loads.append(f"{before} → {load()}")
    finally:
        if server is not None:
            stop(server)
    print(f"model: {model.name}; {runtime.describe_device(args.threads)}; arith, {args.limit} problems × "
          f"{args.samples} samples, greedy, at most {args.max_tokens} tokens, context {args.ctx}; "
          f"{args.rounds} round(s); 1-minute load before → after each round: {', '.join(loads)}\n")
    print("| configuration | generated tokens | pass@1 | generation tokens/s |")
    print("|---|---:|---:|---:|")
    mean = {name: statistics.fmean(r) for name, r in rates.items()}
    for name in configs:
        tokens, accuracy = facts[name]
        print(f"| {name} | {tokens} | {100 * accuracy:.1f} % | {mean[name]:.1f} |")
    print(f"\nratio --parallel 8 / --parallel 1: {mean['quantkit --parallel 8'] / mean['quantkit --parallel 1']:.2f}"
          " (target ≥ 3)")
    if server is not None:
        other = mean["llama-server -np 8 (--endpoint)"]
        print(f"ratio quantkit --parallel 8 / llama-server -np 8: {mean['quantkit --parallel 8'] / other:.2f}"
              " (target ≥ 1.0)")


if __name__ == "__main__":
    main()
