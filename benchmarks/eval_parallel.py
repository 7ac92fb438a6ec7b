"""`quantkit eval` generation tokens/s with --parallel 8 against --parallel 1 on the same file, task and
settings (issue #13's target: ≥ 3×). Greedy, so both runs generate the same answers; each run writes its
samples to a fresh temporary folder. Never imported by the package.

    python benchmarks/eval_parallel.py [MODEL.gguf] [--limit 16] [--max-tokens 96] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(model: Path, parallel: int, args) -> tuple[float, int, float]:
    from quantkit.eval.runner import Protocol, evaluate
    from quantkit.eval.tasks import arith_problems

    protocol = Protocol(temperature=0, max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = evaluate([model], arith_problems(count=args.limit), "arith", protocol, out_dir=out,
                          parallel=parallel, n_ctx=args.ctx, n_gpu_layers=0, threads=args.threads)
        seconds = time.perf_counter() - t0
    s = result.models[0].summary
    return s.tokens_per_second or 0.0, s.generated_tokens, s.pass_at_1.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    from quantkit import runtime
    from quantkit.convert.embedded import embedded_gguf

    model = args.model or embedded_gguf()
    print(f"model: {model.name}; {runtime.describe_device(args.threads)}; arith, {args.limit} problems, greedy, "
          f"at most {args.max_tokens} tokens\n")
    print("| --parallel | generated tokens | pass@1 | generation tokens/s |")
    print("|---:|---:|---:|---:|")
    rates = {}
    for parallel in (1, 8):
        rate, tokens, accuracy = run(model, parallel, args)
        rates[parallel] = rate
        print(f"| {parallel} | {tokens} | {100 * accuracy:.1f} % | {rate:.1f} |", flush=True)
    print(f"\nratio --parallel 8 / --parallel 1: {rates[8] / rates[1]:.2f} (target ≥ 3)")


if __name__ == "__main__":
    main()
