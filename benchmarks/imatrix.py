"""`quantkit imatrix` against llama.cpp's own llama-imatrix: the same numbers, the same quantized files, the speed.

    python benchmarks/imatrix.py [BASE.gguf] [--text-file TEXT] [--ctx 512] [--chunks 8] [--threads 1]
           [--runs 2] [--kld]

Without BASE, the embedded SmolLM2 goes through quantkit's export and convert to an F16 base first; the default
text is python-docs' calibration part (offline). Both tools run as commands on the same file, text and settings
(llama-imatrix with `--no-ppl`, so it does no work ours does not; `-nr`: the same ggml buffers as quantkit);
their runs are interleaved and the fastest of each is compared. Then:
  - every `in_sum2` column (relative difference) and every count of the two files, and whether the files are
    byte-identical;
  - Q4_K_M, Q3_K_S and IQ3_XXS quantized with each imatrix, through llama-quantize (each imatrix put at the same
    path in turn, since llama-quantize records the path) and through quantkit's quantize: byte-identical or not;
  - with --kld: mean KLD against the F16 base on python-docs' held-out part for Q2_K, Q3_K_M and Q4_K_M, without
    and with our imatrix.
llama-imatrix and llama-quantize are built once (reference/llama_tools.py). Never imported by the package.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.llama_tools import BENCH_CACHE, build_tool  # noqa: E402

QUANT_TYPES = ("Q4_K_M", "Q3_K_S", "IQ3_XXS")
KLD_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_M")


def smollm2_base(folder: Path) -> Path:
    from quantkit.convert import convert
    from quantkit.convert.embedded import embedded_checkpoint

    return convert(embedded_checkpoint(), folder, outtype="F16").base.path


def run_llama(binary: Path, base: Path, text: Path, out: Path, args) -> tuple[float, float]:
    """Wall time, and llama-imatrix's own time for its first pass (n_batch / ctx chunks)."""
    cmd = [str(binary), "-m", str(base), "-f", str(text), "-c", str(args.ctx), "--chunks", str(args.chunks),
           "-t", str(args.threads), "-ngl", "0", "-nr", "--no-ppl", "-o", str(out)]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"llama-imatrix failed ({result.returncode}):\n{result.stderr[-3000:]}")
    m = re.search(r"([\d.]+) seconds per pass", result.stdout + result.stderr)
    return seconds, float(m.group(1)) if m else float("nan")


def run_ours(base: Path, text: Path, out: Path, args) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "quantkit", "imatrix", str(base), "--text-file", str(text), "--ctx", str(args.ctx),
           "--chunks", str(args.chunks), "--threads", str(args.threads), "-ngl", "0", "-o", str(out), "--json"]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"quantkit imatrix failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, json.loads(result.stdout)


def compare(ours: Path, theirs: Path) -> dict:
    from quantkit.imatrix import read_imatrix

    a, b = read_imatrix(ours), read_imatrix(theirs)
    if sorted(a.entries) != sorted(b.entries):
        return {"same_tensors": False}
    worst, unequal, columns, counts_equal = 0.0, 0, 0, True
    for name, e in a.entries.items():
        f = b.entries[name]
        counts_equal &= bool(np.array_equal(e.counts, f.counts))
        rel = np.abs(e.sums.astype(np.float64) - f.sums) / np.maximum(np.abs(f.sums.astype(np.float64)), 1e-30)
        worst = max(worst, float(rel.max()))
        unequal += int((e.sums != f.sums).sum())
        columns += e.sums.size
    return {"same_tensors": True, "tensors": len(a.entries), "columns": columns, "max_rel": worst,
            "unequal_columns": unequal, "counts_equal": counts_equal, "chunk_count": (a.chunk_count, b.chunk_count),
            "files_identical": filecmp.cmp(ours, theirs, shallow=False)}


def quantize_both(quantizer: Path, base: Path, imatrices: dict[str, Path], folder: Path, threads: int) -> list[str]:
    from quantkit.quantize.file import quantize

    rows = []
    shared = folder / "imatrix.gguf"  # llama-quantize writes the imatrix's path into the file: one path for both
    for qtype in QUANT_TYPES:
        outs_llama, outs_ours = {}, {}
        for who, path in imatrices.items():
            shutil.copyfile(path, shared)
            outs_llama[who] = folder / f"llama-quantize-{who}-{qtype}.gguf"
            subprocess.run([str(quantizer), "--imatrix", str(shared), str(base), str(outs_llama[who]), qtype,
                            str(threads)], check=True, capture_output=True)
            outs_ours[who] = folder / f"quantkit-{who}-{qtype}.gguf"
            quantize(base, outs_ours[who], qtype, imatrix=shared, threads=threads)
        same_llama = filecmp.cmp(outs_llama["quantkit"], outs_llama["llama-imatrix"], shallow=False)
        same_ours = filecmp.cmp(outs_ours["quantkit"], outs_ours["llama-imatrix"], shallow=False)
        rows.append(f"| {qtype} | {'yes' if same_llama else 'NO'} | {'yes' if same_ours else 'NO'} | "
                    f"{outs_llama['quantkit'].stat().st_size / 2**20:.2f} MiB |")
        for p in (*outs_llama.values(), *outs_ours.values()):
            p.unlink()
    return rows


def kld_table(base: Path, imatrix: Path, folder: Path, args) -> list[str]:
    from quantkit.measure.texts import dataset_path, read_text
    from quantkit.measure.perplexity import Settings, perplexity
    from quantkit.quantize.file import quantize

    files = []
    for qtype in KLD_TYPES:
        for with_imatrix in (False, True):
            dest = folder / f"{qtype}-{'imatrix' if with_imatrix else 'plain'}.gguf"
            quantize(base, dest, qtype, imatrix=imatrix if with_imatrix else None, threads=args.threads)
            files.append(dest)
    text = read_text(dataset_path("python-docs-heldout"))
    settings = Settings(n_ctx=args.ctx, chunks=args.kld_chunks, threads=args.threads, n_gpu_layers=0)
    results = {Path(r.path).name: r for r in perplexity([base, *files], text, settings)}
    rows = []
    for qtype in KLD_TYPES:
        plain, imat = results[f"{qtype}-plain.gguf"], results[f"{qtype}-imatrix.gguf"]
        rows.append(f"| {qtype} | {plain.file_size / 2**20:.1f} MiB | {plain.kl.mean_kld:.5f} | "
                    f"{imat.kl.mean_kld:.5f} | {imat.kl.mean_kld / plain.kl.mean_kld:.3f} | "
                    f"{plain.ppl:.3f} | {imat.ppl:.3f} |")
    base_ppl = results[base.name].ppl
    rows.append(f"\nF16 base PPL {base_ppl:.3f}; {results[base.name].n_chunks} chunks of {args.ctx} tokens of "
                "python-docs-heldout")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", nargs="?", type=Path)
    ap.add_argument("--text-file", type=Path)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--kld", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="only the timed runs and the comparison")
    ap.add_argument("--kld-chunks", type=int, default=40)
    ap.add_argument("--kld-imatrix-chunks", type=int, default=100)
    args = ap.parse_args()
    from quantkit.measure.texts import dataset_path

    imatrix_tool, quantizer = build_tool("llama-imatrix"), build_tool("llama-quantize")
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BENCH_CACHE) as tmp:
        out = Path(tmp)
        base = args.base or smollm2_base(out / "base")
        text = args.text_file or dataset_path("python-docs-calibration")
        print(f"base: {base.name}; text: {text.name}; --ctx {args.ctx} --chunks {args.chunks}, "
              f"{args.threads} thread(s); fastest of {args.runs} interleaved runs\n")
        ours, theirs = out / "quantkit.gguf", out / "llama.gguf"
        t_ours, t_llama, pass_ours, pass_llama = [], [], [], []
        passes = -(-args.chunks // max(1, 2048 // args.ctx))
        for _ in range(args.runs):
            seconds, summary = run_ours(base, text, ours, args)
            t_ours.append(seconds)
            pass_ours.append(summary["seconds"] / passes)
            seconds, first_pass = run_llama(imatrix_tool, base, text, theirs, args)
            t_llama.append(seconds)
            pass_llama.append(first_pass)
        best_ours, best_llama = min(t_ours), min(t_llama)
        runs = lambda ts: ", ".join(f"{t:.2f}" for t in ts)  # noqa: E731
        print("| | wall s, best (runs) | s per pass of 4 chunks, best (runs) |")
        print("|---|---:|---:|")
        print(f"| quantkit imatrix | {best_ours:.2f} ({runs(t_ours)}) | {min(pass_ours):.2f} ({runs(pass_ours)}) |")
        print(f"| llama-imatrix --no-ppl | {best_llama:.2f} ({runs(t_llama)}) | {min(pass_llama):.2f} "
              f"({runs(pass_llama)}) |")
        print(f"\nspeed ours / llama-imatrix: end to end {best_llama / best_ours:.3f}, per pass "
              f"{min(pass_llama) / min(pass_ours):.3f}  (target ≥ 0.9)\n")

        c = compare(ours, theirs)
        print(f"tensors: {c.get('tensors')}, in_sum2 values: {c.get('columns')}, max relative difference "
              f"{c.get('max_rel'):.3g} (target ≤ 1e-5), values not bit-equal: {c.get('unequal_columns')}, counts "
              f"equal: {c.get('counts_equal')}, chunk_count {c.get('chunk_count')}, imatrix files byte-identical: "
              f"{c.get('files_identical')}\n")
        if args.speed_only:
            return

        print("| type | llama-quantize: same bytes with either imatrix | quantkit quantize: same bytes | size |")
        print("|---|:---:|:---:|---:|")
        for row in quantize_both(quantizer, base, {"quantkit": ours, "llama-imatrix": theirs}, out, args.threads):
            print(row)

        if args.kld:
            from quantkit.imatrix import compute_imatrix

            kld_imatrix = out / "kld-imatrix.gguf"
            r = compute_imatrix(base, kld_imatrix, dataset="python-docs", n_ctx=args.ctx,
                                chunks=args.kld_imatrix_chunks, threads=args.threads, n_gpu_layers=0)
            print(f"\nimatrix for the KLD table: {r.n_chunks} chunks of {r.dataset}; overlap with "
                  f"{r.overlap.scored}: {100 * r.overlap.lines:.2f} % of lines, {100 * r.overlap.ngrams:.2f} % of "
                  f"{r.overlap.ngram}-word n-grams\n")
            print("| type | size | mean KLD, no imatrix | mean KLD, imatrix | ratio | PPL, no imatrix | PPL, imatrix |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for row in kld_table(base, kld_imatrix, out, args):
                print(row)


if __name__ == "__main__":
    main()
