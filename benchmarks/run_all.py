"""Every comparison of quantkit with llama.cpp's own tools, behind one entry point, and one table of ratios.

    python benchmarks/run_all.py [--only convert,perplexity,bench] [--out benchmarks/RESULTS.md] [--threads N]
                                 [--layers 8] [--chunks 20]

Runs, each in its own process (they build llama.cpp's tools on first use, which takes a while):
  convert.py     quantkit convert vs convert_hf_to_gguf.py and cp   (wall time ratios; lower is better)
  perplexity.py  quantkit perplexity vs llama-perplexity            (speed ratio, and whether PPL agrees)
  bench.py       quantkit bench / chat vs llama-bench               (tokens/s ratios; higher is better)
  serve.py       quantkit serve vs llama-server, llama_cpp.server    (aggregate tokens/s at concurrency 1-16)
on the embedded SmolLM2 (perplexity on the python-docs text, offline) and on random checkpoints of
R1-Distill-Qwen-1.5B's shapes (convert). Writes a Markdown table with the date and the machine, and each
script's own output below it. There is no quantize comparison yet: quantkit's quantize *is* libllama's.
Never imported by the package; not run by the tests (minutes to hours).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Ratio:
    script: str
    comparison: str
    ratio: float | None
    target: str  # e.g. "≤ 0.5", "≥ 0.95", "" (no target)

    @property
    def met(self) -> str:
        if self.ratio is None or not self.target:
            return ""
        op, value = self.target.split()
        return "✓" if (self.ratio <= float(value) if op == "≤" else self.ratio >= float(value)) else "✗"


# ---- parsing each script's output (their printed lines are their interface) -----------------------------------

def parse_convert(out: str) -> list[Ratio]:
    rows = []
    for block in re.split(r"\n(?=\d+ layers, )", out):
        head = re.match(r"(\d+) layers, ([\d.]+) GB", block.strip())
        if not head:
            continue
        what = f"{head.group(1)} layers ({head.group(2)} GB bf16)"
        if m := re.search(r"quantkit / reference wall time:\s*([\d.]+)", block):
            rows.append(Ratio("convert.py", f"convert wall time / convert_hf_to_gguf.py, {what}", float(m.group(1)),
                              "≤ 0.5"))
        if m := re.search(r"quantkit / cp wall time:\s*([\d.]+)", block):
            rows.append(Ratio("convert.py", f"convert wall time / cp, {what}", float(m.group(1)), "≤ 1.3"))
    return rows


def parse_perplexity(out: str) -> list[Ratio]:
    rows = []
    if m := re.search(r"speed ratio quantkit / llama-perplexity:\s*([\d.]+)", out):
        rows.append(Ratio("perplexity.py", "perplexity speed / llama-perplexity (end to end)", float(m.group(1)),
                          "≥ 0.95"))
    if m := re.search(r"PPL agree to 4 decimals:\s*(True|False)", out):
        rows.append(Ratio("perplexity.py", f"PPL equal to llama-perplexity's to 4 decimals: {m.group(1)}", None, ""))
    return rows


def parse_bench(out: str) -> list[Ratio]:
    rows = []
    summary = out.split("| comparison | mean ratio | target |", 1)[-1]
    for m in re.finditer(r"^\| ([^|]+?) \| ([\d.]+) \| ([^|]+?) \|$", summary, re.MULTILINE):
        target = m.group(3).replace("✓", "").replace("✗", "").replace("—", "").strip()
        rows.append(Ratio("bench.py", m.group(1).strip(), float(m.group(2)), target))
    return rows


def parse_serve(out: str) -> list[Ratio]:
    rows = []
    for m in re.finditer(r"^\| (quantkit / [^|]+?) \(aggregate tok/s\) \| (\d+) \| ([\d.]+) \| (≥ [\d.]+) \|",
                         out, re.MULTILINE):
        rows.append(Ratio("serve.py", f"serve aggregate tok/s, {m.group(1)}, concurrency {m.group(2)}",
                          float(m.group(3)), m.group(4)))
    return rows


# ---- running them -------------------------------------------------------------------------------------------

def run_script(name: str, args: list[str]) -> tuple[str, float]:
    cmd = [sys.executable, str(HERE / name), *args]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return f"FAILED ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}", seconds
    return proc.stdout, seconds


def comparisons(args) -> dict[str, tuple[list[str], callable]]:
    from quantkit.convert.embedded import embedded_gguf
    from quantkit.measure.texts import python_docs_path

    threads = str(args.threads)
    return {
        "convert": (sum((["--layers", str(n)] for n in args.layers), []), parse_convert),
        "perplexity": ([str(embedded_gguf()), "--text-file", str(python_docs_path()), "--chunks", str(args.chunks),
                        "--threads", threads], parse_perplexity),
        "bench": (["--threads", threads, "-r", str(args.repetitions), "--rounds", str(args.rounds)], parse_bench),
        "serve": (["--threads", threads, "--rounds", str(args.rounds), "--out", "-"], parse_serve),
    }


def machine() -> str:
    from quantkit.runtime import describe_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}; {describe_device()}"


def markdown(ratios: list[Ratio], outputs: dict[str, tuple[str, float]], when: str, where: str) -> str:
    lines = ["# quantkit against llama.cpp's own tools", "", f"Run {when} on {where}.", "",
             "| script | comparison | ratio | target | |", "|---|---|---:|---:|:---:|"]
    for r in ratios:
        lines.append(f"| {r.script} | {r.comparison} | {'' if r.ratio is None else f'{r.ratio:.3f}'} | "
                     f"{r.target} | {r.met} |")
    for name, (out, seconds) in outputs.items():
        lines += ["", f"## {name}.py ({seconds:.0f} s)", "", "```", out.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="convert,perplexity,bench,serve",
                    help="comma-separated: convert, perplexity, bench, serve")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--threads", type=int, default=1, help="a busy 2-core machine measures best with 1")
    ap.add_argument("--layers", type=int, action="append", help="convert.py layer counts (default 8)")
    ap.add_argument("--chunks", type=int, default=20, help="perplexity.py chunks of 512 tokens")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    args.layers = args.layers or [8]
    table = comparisons(args)
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in table]
    if unknown:
        ap.error(f"unknown comparison(s): {', '.join(unknown)}; choose from {', '.join(table)}")
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    outputs, ratios = {}, []
    for name in chosen:
        script_args, parse = table[name]
        outputs[name] = run_script(f"{name}.py", script_args)
        ratios += parse(outputs[name][0]) or [Ratio(f"{name}.py", "no ratio found in the output (see below)", None, "")]
    text = markdown(ratios, outputs, when, machine())
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
