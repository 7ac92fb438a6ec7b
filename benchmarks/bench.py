"""quantkit bench and `quantkit chat --prompt` against llama.cpp's own llama-bench, on the same file and threads.

    python benchmarks/bench.py [MODEL.gguf] [--threads N] [--repetitions 5] [--build-only]

llama-bench is built once from the llama.cpp tree vendored in the llama-cpp-python 0.3.36 sdist, in its own
build folder under ~/.cache/quantkit-bench (Release, -DGGML_NATIVE=ON, only that target), and reused after.
MODEL defaults to the embedded SmolLM2-135M-Instruct Q4_1. Prints pp512 and tg128 tokens/s of both tools and
their ratios (target ≥ 0.95), quantkit's pp over its tg (a batch of prompt tokens shares one pass over the
weights, each generated token makes its own: expected well above 1.5), and the mean generation rate of
`chat --prompt --json` runs (as many as the repetitions, chat's default sampler included) against llama-bench's
tg128 at the same depth. Never imported by the package.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.llama_tools import BENCH_CACHE, build_tool  # noqa: E402


# ---- measuring ----------------------------------------------------------------------------------------------

def run_llama_bench(binary: Path, model: Path, args, n_prompt: int | None = None, depth: int = 0
                    ) -> dict[str, tuple[float, float]]:
    """{"pp512": (mean, std), "tg128": (mean, std)} from llama-bench's JSON (tg at `depth` tokens of context)."""
    n_prompt = args.n_prompt if n_prompt is None else n_prompt
    cmd = [str(binary), "-m", str(model), "-p", str(n_prompt), "-n", str(args.n_gen), "-d", str(depth), "-r",
           str(args.repetitions), "-t", str(args.threads), "-ngl", str(args.n_gpu_layers),
           "--repack", "1" if args.extra_buffers else "0", "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = {}
    for r in json.loads(out):
        name = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        rows[name] = (r["avg_ts"], r["stddev_ts"])
    return rows


def quantkit(*args: str) -> str:
    cmd = [sys.executable, "-m", "quantkit", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout


def run_quantkit_bench(model: Path, args) -> dict[str, tuple[float, float]]:
    out = quantkit("bench", str(model), "-p", str(args.n_prompt), "-n", str(args.n_gen), "-r", str(args.repetitions),
                   "--threads", str(args.threads), "-ngl", str(args.n_gpu_layers), "--json")
    return {r["test"]: (r["mean_tps"], r["std_tps"]) for r in json.loads(out)}


CHAT_PROMPT = "Write a long story about a dragon who learns to bake bread. Make it at least ten paragraphs."


def run_chat(model: Path, args, ctx: int, *extra: str) -> dict:
    """One `chat --prompt --json` answer of up to n_gen tokens: its generation rate, sampling included."""
    out = quantkit("chat", str(model), "--prompt", CHAT_PROMPT, "-n", str(args.n_gen), "--seed", "1",
                   "--threads", str(args.threads), "-ngl", str(args.n_gpu_layers), "--ctx", str(ctx), "--json", *extra)
    return json.loads(out)


def mean_chat(model: Path, args, ctx: int, *extra: str) -> dict:
    runs = [run_chat(model, args, ctx, *extra) for _ in range(args.repetitions)]
    rates = [r["gen_tps"] for r in runs]
    return runs[-1] | {"gen_tps": statistics.fmean(rates), "gen_std": statistics.stdev(rates) if len(rates) > 1 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="a .gguf file (default: the embedded SmolLM2)")
    parser.add_argument("--threads", type=int, default=None, help="default: all physical cores")
    parser.add_argument("-p", "--n-prompt", type=int, default=512)
    parser.add_argument("-n", "--n-gen", type=int, default=128)
    parser.add_argument("-r", "--repetitions", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2,
                        help="llama-bench, quantkit bench and chat take turns this many times (noise on a shared "
                             "machine hits all three alike)")
    parser.add_argument("-ngl", "--n-gpu-layers", type=int, default=None, help="default: 0 on a CPU build, else 99")
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    binary = build_tool("llama-bench")
    if args.build_only:
        return

    from quantkit import runtime
    from quantkit.convert.embedded import embedded_gguf

    model = args.model or embedded_gguf()
    args.threads = args.threads or runtime.physical_cores()
    gpu = runtime.supports_gpu_offload()
    if args.n_gpu_layers is None:
        args.n_gpu_layers = 99 if gpu else 0
    # the same switch on both sides: quantkit turns ggml's repacking off on AMX CPUs (its AMX path crashes there)
    args.extra_buffers = runtime.extra_buffers_default()
    pp, tg = f"pp{args.n_prompt}", f"tg{args.n_gen}"

    print(f"model: {model.name}; {runtime.describe_device(args.threads)}; -ngl {args.n_gpu_layers}; "
          f"repack {int(args.extra_buffers)}; {args.repetitions} repetitions; {args.rounds} rounds\n")
    # chat generates after its prompt, in a context of prompt + n_gen cells: the like-for-like llama-bench test is
    # tg{n_gen} at that depth (-d), which reads the same KV cache; plain tg{n_gen} starts from an empty one
    depth = run_chat(model, args, ctx=4096)["prompt_tokens"]
    chat_ctx = depth + args.n_gen
    tg_d = f"{tg} @ d{depth}"
    print("| round | test | llama-bench t/s | quantkit t/s | ratio |")
    print("|---|---|---:|---:|---:|")
    ratios: dict[str, list[float]] = {pp: [], tg: [], "chat": [], "chat0": [], "chat_all": []}
    pp_over_tg: list[float] = []
    for i in range(1, args.rounds + 1):
        ref = run_llama_bench(binary, model, args)
        ref_d = run_llama_bench(binary, model, args, n_prompt=0, depth=depth)
        ours = run_quantkit_bench(model, args)
        chat = mean_chat(model, args, chat_ctx)
        chat_all = mean_chat(model, args, chat_ctx, "--top-k", "0")
        for test in (pp, tg):
            ratios[test].append(ours[test][0] / ref[test][0])
            print(f"| {i} | quantkit bench {test} | {ref[test][0]:.2f} ± {ref[test][1]:.2f} | "
                  f"{ours[test][0]:.2f} ± {ours[test][1]:.2f} | {ratios[test][-1]:.3f} |", flush=True)
        pp_over_tg.append(ours[pp][0] / ours[tg][0])
        n = chat["reasoning_tokens"] + chat["answer_tokens"]
        ratios["chat"].append(chat["gen_tps"] / ref_d[tg][0])
        ratios["chat0"].append(chat["gen_tps"] / ref[tg][0])
        print(f"| {i} | chat --prompt ({n} tok, ctx {chat_ctx}) vs {tg_d} | {ref_d[tg][0]:.2f} ± {ref_d[tg][1]:.2f} | "
              f"{chat['gen_tps']:.2f} ± {chat['gen_std']:.2f} | {ratios['chat'][-1]:.3f} |", flush=True)
        print(f"| {i} | chat --prompt vs {tg} (empty cache) | {ref[tg][0]:.2f} | {chat['gen_tps']:.2f} | "
              f"{ratios['chat0'][-1]:.3f} |", flush=True)
        ratios["chat_all"].append(chat_all["gen_tps"] / ref_d[tg][0])
        print(f"| {i} | chat --prompt --top-k 0 vs {tg_d} | {ref_d[tg][0]:.2f} | {chat_all['gen_tps']:.2f} ± "
              f"{chat_all['gen_std']:.2f} | {ratios['chat_all'][-1]:.3f} |", flush=True)
    print("\n| comparison | mean ratio | target |")
    print("|---|---:|---:|")
    labels = {pp: f"quantkit bench {pp}", tg: f"quantkit bench {tg}", "chat": f"chat --prompt generation vs {tg_d}",
              "chat0": f"chat --prompt generation vs {tg} (not like for like: no prompt in the cache)",
              "chat_all": f"chat --prompt --top-k 0 (top-p over the whole vocabulary) vs {tg_d}"}
    for name, values in ratios.items():
        mean = sum(values) / len(values)
        target = "—" if name in ("chat0", "chat_all") else ("≥ 0.95 ✓" if mean >= 0.95 else "≥ 0.95 ✗")
        print(f"| {labels[name]} | {mean:.3f} | {target} |")
    mean = statistics.fmean(pp_over_tg)  # once tests/test_bench.py's timed assertion (pp > 1.5 × tg)
    print(f"| quantkit bench {pp} over its own {tg} (one pass per batch against one per token) | {mean:.3f} | "
          f"{'> 1.5 ✓' if mean > 1.5 else '> 1.5 ✗'} |")


if __name__ == "__main__":
    main()
