"""Speculative decoding: greedy generation tokens/s of quantkit's engine without speculation, with a draft model and
with `--spec ngram`, against llama.cpp's llama-server without a draft and with the same draft (`-md`, the same
--draft-max/--draft-min/--draft-p-min), all in one run on the same prompts, threads and context.

    python benchmarks/speculative.py [--target F16.gguf --draft Q4_0.gguf] [--max-tokens 256] [--threads N]
           [--draft-max 8] [--draft-min 0] [--draft-p-min 0.75] [--rounds 2] [--no-server]
           [--out benchmarks/speculative_results.md]

Without --target, the embedded SmolLM2-135M-Instruct (Q4_1) is turned into an F16 (the target) and a Q4_0 (its
draft) with libllama's quantizer, once, under ~/.cache/quantkit-bench. Prompts: math questions answered step by
step, one asking for a table (SmolLM2 writes two sentences instead), and one SmolLM2 answers by repeating a
paragraph until the end, as a looping thought does (where the n-gram lookup should pay). tokens/s: generated
tokens after the first over the generation's own time (the engine's GenerationResult.gen_tps; llama-server's
timings.predicted_per_second), one sequence, temperature 0. Configurations take turns within each round, so that
noise on a shared machine hits all alike (every configuration in turn on each prompt); the load is recorded
before and after each round. Prints the table, the ratios (targets on a 2-core CPU: draft ≥ 1.4× no draft,
≥ 1.0× llama-server -md; n-gram ≥ 1.1× on a repetitive thought), the decode cost of 1, 2, 4 and 9 tokens and the
best speed-up those costs allow, and writes them as Markdown to --out. Never imported by the package.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve import Server, free_port, machine, start, stop, wait_ready
from reference.llama_tools import BENCH_CACHE, build_tool

PROMPTS = {
    "math": "A train travels 120 km in 1.5 hours, then 80 km in 1 hour. What is its average speed? Think step by step.",
    "math2": "If 3x + 7 = 22, what is x? Explain each step of your reasoning.",
    "repetitive": "Write the multiplication table of 7 from 7 x 1 to 7 x 20, one line each, in the form '7 x n = m'.",
    # SmolLM2 answers this one by repeating one paragraph until the end: a thought caught in a loop
    "loop": "Write the numbers from twenty-one to forty in words, one per line.",
}


def smollm2_pair() -> tuple[Path, Path]:
    """The embedded SmolLM2 as F16 (target) and Q4_0 (draft), made once with libllama's quantizer."""
    from quantkit.runtime import model_quantize
    from reference.smollm2 import smollm2_gguf

    folder = BENCH_CACHE / "speculative"
    folder.mkdir(parents=True, exist_ok=True)
    target, draft = folder / "SmolLM2-135M-Instruct-F16.gguf", folder / "SmolLM2-135M-Instruct-Q4_0.gguf"
    for path, ftype in ((target, 1), (draft, 2)):  # LLAMA_FTYPE_MOSTLY_F16, _Q4_0
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            model_quantize(smollm2_gguf(), tmp, ftype, allow_requantize=True)
            tmp.rename(path)
    return target, draft


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


# -- quantkit ----------------------------------------------------------------------------------------------------

def open_engines(target: Path, specs: dict, args) -> dict:
    """One engine per configuration, all open at once, so that the runs can take turns prompt by prompt."""
    from quantkit.engine import Engine

    return {name: Engine.open(target, n_ctx=args.ctx, n_parallel=1, n_gpu_layers=0, threads=args.threads,
                              speculation=spec) for name, spec in specs.items()}


def quantkit_one(engine, prompt: str, args) -> tuple[float, int, int]:
    """(tokens/s, drafted, accepted) of one greedy generation."""
    from quantkit.engine import GenerationRequest, Sampling

    text, _ = engine.template.prompt([{"role": "user", "content": prompt}])
    tokens = engine.model.prompt_tokens(text).tolist()
    r = engine.submit(GenerationRequest(tokens, Sampling(temperature=0), max_tokens=args.max_tokens,
                                        split_reasoning=False)).wait()
    return r.gen_tps, r.drafted_tokens, r.accepted_tokens


# -- llama-server ------------------------------------------------------------------------------------------------

def llama_server(target: Path, draft: Path | None, args, port: int, ngram: bool = False) -> Server:
    """llama-server on one slot: plain, with the draft (`-md`), or with its n-gram lookup (`--spec-type
    ngram-simple`, the lookup n-gram and the draft length set to quantkit's). The sdist's llama-server names the
    draft sizes --spec-draft-n-max/-n-min/-p-min (its old --draft-max spelling is refused), and drafts with
    `-md` only when told `--spec-type draft-simple` (its default type is none: it loads the draft, never uses it)."""
    binary = build_tool("llama-server")
    cmd = [str(binary), "-m", str(target), "--host", "127.0.0.1", "--port", str(port), "-t", str(args.threads),
           "-tb", str(args.threads), "-c", str(args.ctx), "-np", "1", "-ngl", "0", "--no-webui"]
    if draft is not None:
        cmd += ["-md", str(draft), "-ngld", "0", "--spec-type", "draft-simple", "--spec-draft-n-max",
                str(args.draft_max), "--spec-draft-n-min", str(args.draft_min), "--spec-draft-p-min",
                str(args.draft_p_min)]
    if ngram:
        cmd += ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", str(args.ngram),
                "--spec-ngram-simple-size-m", str(args.draft_max)]
    name = "llama-server -md" if draft is not None else "llama-server ngram" if ngram else "llama-server"
    return Server(name, cmd, "/health", "llama-server (sdist 0.3.36)", " ".join(cmd[3:]), port=port)


def server_one(server: Server, prompt: str, args) -> tuple[float, int, int]:
    import httpx

    body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": args.max_tokens,
            "seed": 1}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=600).json()
    timings = r.get("timings") or {}
    return (float(timings.get("predicted_per_second") or 0.0), int(timings.get("draft_n") or 0),
            int(timings.get("draft_n_accepted") or 0))


# -- the run -----------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path)
    parser.add_argument("--draft", type=Path)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 2, 2))
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--draft-max", type=int, default=8)
    parser.add_argument("--draft-min", type=int, default=0)
    parser.add_argument("--draft-p-min", type=float, default=0.75)
    parser.add_argument("--ngram", type=int, default=4, help="the n-gram lookup's n (quantkit's and llama-server's)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-server", action="store_true", help="quantkit's configurations only")
    parser.add_argument("--prompts", default=",".join(PROMPTS), help="which of the prompts (comma-separated)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "speculative_results.md")
    args = parser.parse_args()

    from quantkit.engine.speculative import Speculation

    target, draft = (args.target, args.draft) if args.target else smollm2_pair()
    prompts = {name: PROMPTS[name] for name in args.prompts.split(",")}
    specs = {"quantkit": None,
             "quantkit --draft": Speculation("draft", draft=draft, draft_max=args.draft_max,
                                             draft_min=args.draft_min, p_min=args.draft_p_min),
             "quantkit --spec ngram": Speculation("ngram", draft_max=args.draft_max, draft_min=args.draft_min,
                                                         ngram=args.ngram)}
    servers: list[Server] = []
    scratch = Path(tempfile.mkdtemp(prefix="speculative-"))
    results: dict[str, dict[str, list]] = {}
    loads = []
    engines = open_engines(target, specs, args)
    try:
        if not args.no_server:
            for d, ngram in ((None, False), (draft, False), (None, True)):
                server = llama_server(target, d, args, free_port(), ngram)
                start(server, scratch)
                wait_ready(server, 300)
                server_one(server, "Hi", args)
                servers.append(server)
        runs = {**{name: (lambda p, e=e: quantkit_one(e, p, args)) for name, e in engines.items()},
                **{s.name: (lambda p, s=s: server_one(s, p, args)) for s in servers}}
        for name, run in runs.items():  # warm-up
            run("Hi")
        for _ in range(args.rounds):
            before = load()
            for prompt_name, prompt in prompts.items():  # every configuration in turn on each prompt
                for name, run in runs.items():
                    results.setdefault(name, {}).setdefault(prompt_name, []).append(run(prompt))
            loads.append(f"{before} → {load()}")
    finally:
        for server in servers:
            stop(server)
        for engine in engines.values():
            engine.close()
    costs = {path.name: decode_costs(path, args.threads) for path in (target, draft)}
    report(args, target, draft, results, loads, list(prompts), costs)


BATCHES = (1, 2, 4, 9)


def decode_costs(path: Path, threads: int, reps: int = 15) -> dict[int, float]:
    """Median seconds of one decode of n tokens (n in BATCHES) after a 200-token prompt, with every row's logits:
    what a verification of n-1 drafted tokens costs the target (and n drafting steps the draft, for n = 1)."""
    from quantkit import runtime

    with runtime.load_model(path, n_gpu_layers=0) as model, runtime.create_context(
            model, n_ctx=1024, n_batch=512, threads=threads, kv_unified=True) as ctx, runtime.Batch(512) as batch:
        prompt = list(range(100, 300))
        for i, token in enumerate(prompt):
            batch.add(token, i, 0, False)
        ctx.decode(batch)
        costs = {}
        for n in BATCHES:
            times = []
            for _ in range(reps):
                ctx.seq_rm(0, len(prompt), -1)
                batch.clear()
                for j in range(n):
                    batch.add(500 + j, len(prompt) + j, 0, True)
                t0 = time.perf_counter()
                ctx.decode(batch)
                times.append(time.perf_counter() - t0)
            costs[n] = statistics.median(times)
    return costs


def best_case(costs: dict[str, dict[int, float]], target: str, draft: str, accept: float) -> list[str]:
    """The speed-up speculation could reach at the measured acceptance rate, from the decode costs alone (no
    Python, no sampling): k drafted tokens cost k draft decodes and one target decode of k+1 rows, and yield
    (1 - a^(k+1)) / (1 - a) tokens on average."""
    one = costs[target][1]
    lines = []
    for n in BATCHES[1:]:
        k = n - 1
        made = (1 - accept ** (k + 1)) / (1 - accept) if accept < 1 else k + 1
        cycle = k * costs[draft][1] + costs[target][n]
        lines.append(f"- k = {k}: {made:.2f} tokens per {1000 * cycle:.1f} ms → at best {made * one / cycle:.2f}× "
                     "the target alone")
    return lines


def report(args, target: Path, draft: Path, results, loads, names: list[str], costs) -> None:
    mean = {name: {p: statistics.fmean(v[0] for v in values) for p, values in per.items()}
            for name, per in results.items()}
    lines = [f"# Speculative decoding — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             (f"Machine: {machine()}; {args.threads} threads; 1-minute load before → after each round: "
              f"{', '.join(loads)} (the machine was shared with other work: figures are noisy)."),
             (f"Target {target.name}, draft {draft.name}; greedy, at most {args.max_tokens} tokens, --draft-max "
              f"{args.draft_max} --draft-min {args.draft_min} --draft-p-min {args.draft_p_min}; mean of "
              f"{args.rounds} rounds."), "",
             ("| configuration | " + " | ".join(f"{p} tok/s" for p in names) + " | accepted / drafted |"),
             ("|---|" + "---|" * (len(names) + 1))]
    for name, per in results.items():
        drafted = sum(v[1] for values in per.values() for v in values)
        accepted = sum(v[2] for values in per.values() for v in values)
        lines.append(f"| {name} | " + " | ".join(f"{mean[name][p]:.1f}" for p in names)
                     + f" | {accepted} / {drafted} |")
    lines += ["", "Ratios (same run):", ""]

    def ratio(a: str, b: str) -> None:
        if a in mean and b in mean:
            lines.append(f"- {a} / {b}: " + ", ".join(
                f"{p} {mean[a][p] / mean[b][p]:.2f}" for p in names if mean[b][p] > 0))

    ratio("quantkit --draft", "quantkit")
    ratio("quantkit --spec ngram", "quantkit")
    ratio("quantkit --draft", "llama-server -md")
    ratio("quantkit --spec ngram", "llama-server ngram")
    ratio("quantkit", "llama-server")
    ratio("llama-server -md", "llama-server")
    lines += ["", "One decode of n tokens (median ms, the same threads; n - 1 = drafted tokens checked at once):", "",
              "| model | " + " | ".join(f"n = {n}" for n in BATCHES) + " |", "|---|" + "---:|" * len(BATCHES)]
    for name, per in costs.items():
        lines.append(f"| {name} | " + " | ".join(f"{1000 * per[n]:.2f}" for n in BATCHES) + " |")
    per = results.get("quantkit --draft", {})
    drafted = sum(v[1] for values in per.values() for v in values)
    accepted = sum(v[2] for values in per.values() for v in values)
    if drafted:
        lines += ["", f"The best speculation could do with this pair at its measured acceptance "
                      f"({accepted}/{drafted} = {accepted / drafted:.2f}), from these costs alone:", ""]
        lines += best_case(costs, target.name, draft.name, accepted / drafted)
    text = "\n".join(lines) + "\n"
    print(text)
    with contextlib.suppress(OSError):
        args.out.write_text(text)


if __name__ == "__main__":
    main()
