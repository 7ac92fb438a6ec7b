"""quantkit perplexity against llama.cpp's own llama-perplexity, on the same file, text, ctx, threads and batch.

    python benchmarks/perplexity.py MODEL.gguf --text-file TEXT [--ctx 512] [--batch 2048] [--chunks N]
           [--threads N] [--kl-quant OTHER.gguf]

llama-perplexity is built once from the llama.cpp tree vendored in the llama-cpp-python 0.3.36 sdist, in a
scratch folder under ~/.cache/quantkit-bench (Release, -DGGML_NATIVE=ON, only that target), and reused after.
Prints both PPLs and tokens/s and their ratio; with --kl-quant, also both KL-divergence reports
(base = MODEL, quant = OTHER). `--build-only` just builds. Never imported by the package.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.llama_tools import BENCH_CACHE, build_tool  # noqa: E402


# ---- building llama-perplexity ------------------------------------------------------------------------------


# ---- running both -------------------------------------------------------------------------------------------

def run_llama_perplexity(binary: Path, model: Path, text: Path, args, extra: list[str]) -> tuple[str, float]:
    """llama-perplexity's output and its wall time. `-nr`: the same ggml buffers as quantkit (see runtime.py)."""
    cmd = [str(binary), "-m", str(model), "-f", str(text), "-c", str(args.ctx), "-b", str(args.batch),
           "-t", str(args.threads), "-ngl", "0", "-nr", *(["--chunks", str(args.chunks)] if args.chunks else []),
           *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"llama-perplexity failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout + out.stderr, seconds


def parse_ppl(log: str) -> tuple[float, float]:
    m = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", log)
    return float(m.group(1)), float(m.group(2))


def parse_kl(log: str) -> dict[str, float]:
    pats = {"ppl_q": r"Mean PPL\(Q\)\s*:\s*([\d.]+)", "ppl_base": r"Mean PPL\(base\)\s*:\s*([\d.]+)",
            "mean_kld": r"Mean\s+KLD:\s*([-\d.]+)", "max_kld": r"Maximum KLD:\s*([-\d.]+)",
            "99%": r"99\.0%\s+KLD:\s*([-\d.]+)", "median": r"Median\s+KLD:\s*([-\d.]+)",
            "rms_dp": r"RMS Δp\s*:\s*([-\d.]+)", "same_top": r"Same top p:\s*([-\d.]+)"}
    return {k: float(m.group(1)) for k, p in pats.items() if (m := re.search(p, log))}


def run_quantkit(models: list[Path], text: Path, args):
    from quantkit.measure.texts import read_text
    from quantkit.measure.perplexity import Settings, perplexity

    settings = Settings(n_ctx=args.ctx, n_batch=args.batch, chunks=args.chunks, threads=args.threads, n_gpu_layers=0,
                        kl_top_k=args.kl_top_k)
    t0 = time.perf_counter()
    results = perplexity(models, read_text(text), settings)
    return results, time.perf_counter() - t0


def requantize(src: Path, ftype_name: str) -> Path:
    """A second quantization of `src` for the KL comparison (libllama, allow_requantize)."""
    from quantkit.quantize.file import quantize

    dest = BENCH_CACHE / f"{src.stem}-requant-{ftype_name}.gguf"
    if not dest.exists():
        quantize(src, dest, ftype_name, threads=2, allow_requantize=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, nargs="?")
    ap.add_argument("--text-file", type=Path)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--chunks", type=int)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--kl-quant", help="a GGUF, or a type name (e.g. Q4_0) to requantize MODEL to")
    ap.add_argument("--kl-top-k", type=int, default=1024, help="base tokens quantkit keeps per position for KL")
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    binary = build_tool("llama-perplexity")
    if args.build_only:
        print(binary)
        return
    from quantkit.runtime import describe_device

    print(f"device: {describe_device(args.threads)}; ctx {args.ctx}, batch {args.batch}, threads {args.threads}, "
          f"chunks {args.chunks or 'all'}; text {args.text_file}")
    log, lp_seconds = run_llama_perplexity(binary, args.model, args.text_file, args, [])
    lp_ppl, lp_err = parse_ppl(log)
    [qk], qk_seconds = run_quantkit([args.model], args.text_file, args)
    n_eval = qk.n_chunks * qk.n_ctx
    # both end to end (load, tokenize, decode, score): this llama-perplexity prints no perf summary
    print(f"llama-perplexity: PPL = {lp_ppl:.4f} +/- {lp_err:.5f}   {n_eval / lp_seconds:8.1f} tokens/s   "
          f"{lp_seconds:6.1f} s wall (process)")
    print(f"quantkit        : PPL = {qk.ppl:.4f} +/- {qk.ppl_err:.5f}   {n_eval / qk_seconds:8.1f} tokens/s   "
          f"{qk_seconds:6.1f} s wall (in process; {qk.tokens_per_second:.1f} tokens/s decode + scoring only)")
    print(f"PPL agree to 4 decimals: {f'{lp_ppl:.4f}' == f'{qk.ppl:.4f}'};  "
          f"speed ratio quantkit / llama-perplexity: {lp_seconds / qk_seconds:.3f}")
    if args.kl_quant:
        compare_kl(binary, args)


def compare_kl(binary: Path, args) -> None:
    quant = Path(args.kl_quant) if args.kl_quant.endswith(".gguf") else requantize(args.model, args.kl_quant)
    with tempfile.TemporaryDirectory(dir=BENCH_CACHE) as tmp:
        logits = Path(tmp) / "base.kld"
        run_llama_perplexity(binary, args.model, args.text_file, args, ["--kl-divergence-base", str(logits)])
        log, _ = run_llama_perplexity(binary, quant, args.text_file, args,
                                      ["--kl-divergence-base", str(logits), "--kl-divergence"])
        base_bytes = logits.stat().st_size
    lp = parse_kl(log)
    results, _ = run_quantkit([args.model, quant], args.text_file, args)
    k = results[1].kl
    qk = {"ppl_q": results[1].ppl, "ppl_base": k.ppl_base, "mean_kld": k.mean_kld,
          "max_kld": k.kld_percentiles["max"], "99%": k.kld_percentiles["99%"], "median": k.kld_percentiles["median"],
          "rms_dp": 100 * k.rms_dp, "same_top": 100 * k.same_top}
    print(f"KL mode, base {args.model.name} vs {quant.name} ({k.n_positions} positions); "
          f"llama-perplexity's base file: {base_bytes / 2**20:.1f} MiB, quantkit keeps top-{k.top_k}: "
          f"{k.n_positions * (8 * k.top_k + 16) / 2**20:.2f} MiB")
    print(f"{'':12}{'llama-perplexity':>18}{'quantkit':>14}")
    for key in qk:
        print(f"{key:12}{lp.get(key, float('nan')):18.6f}{qk[key]:14.6f}")


if __name__ == "__main__":
    main()
