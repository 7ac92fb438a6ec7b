"""Budget mixes against llama.cpp's standard mixes at the same file size, on SmolLM2 as it is and jittered.

    python benchmarks/mixes.py [-t Q2_K,Q3_K_M,Q4_K_M,Q5_K_M,Q6_K] [--jitter 0,0.02,0.05] [--chunks 30]
                               [--threads 2] [--without-q41] [--llama-imatrix]

The base is the embedded SmolLM2 taken through quantkit's export and convert to F16 (cached). One importance
matrix is made on python-docs' calibration part (by quantkit's imatrix; `--llama-imatrix`: by llama.cpp's own
llama-imatrix, which reference/llama_tools.py builds); every file, standard or planned, is quantized with it.
For each standard type, budget mixes are planned with `--target-size` = the standard file's size — on damage.py's
raw errors, and on the same errors calibrated against KLD (quantize/calibrate.py, on the first chunk of the same
calibration text) — and all are scored on python-docs' held-out part (disjoint from the calibration text): mean
KL-divergence from the base, quantkit's perplexity (llama-perplexity's numbers). The ratio's ± treats the two
KLDs as independent (they are positively correlated, position by position, so it overstates the error).
SmolLM2's only published weights are a Q4_1 file, so its F16 base lies on Q4_1's grid and Q4_1 reproduces it
exactly — an advantage no real base gives; `--jitter 0.02,0.05` also scores copies of the base with noise of 2 %
and 5 % of each tensor's std added to its weights, off that grid (with the imatrix of the original: activations
barely move), and `--without-q41` adds calibrated mixes planned without Q4_1. Never imported by the package.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.llama_tools import BENCH_CACHE, build_tool  # noqa: E402

WORK = BENCH_CACHE / "mixes"


def smollm2_f16() -> Path:
    from quantkit.convert import convert
    from quantkit.convert.embedded import embedded_checkpoint

    return convert(embedded_checkpoint(), WORK / "base", outtype="F16").base.path


def quantkit_imatrix(base: Path, chunks: int, threads: int) -> Path:
    from quantkit.imatrix import compute_imatrix

    out = WORK / f"imatrix-quantkit-{base.stem}-python-docs-{chunks}.gguf"
    if not out.exists():
        compute_imatrix(base, out, dataset="python-docs", chunks=chunks, threads=threads, n_gpu_layers=0)
    return out


def llama_imatrix(base: Path, text: Path, chunks: int, threads: int) -> Path:
    out = WORK / f"imatrix-{base.stem}-{text.stem}-{chunks}.gguf"
    if not out.exists():
        binary = build_tool("llama-imatrix")
        tmp = out.with_suffix(".partial.gguf")
        subprocess.run([str(binary), "-m", str(base), "-f", str(text), "-o", str(tmp), "-c", "512",
                        "--chunks", str(chunks), "-t", str(threads), "-ngl", "0", "--no-ppl"],
                       check=True, capture_output=True)
        tmp.rename(out)
    return out


def jittered(base: Path, scale: float) -> Path:
    """A copy of `base` whose 2-D weights get Gaussian noise of `scale` × each tensor's std (seed 0): off the
    Q4_1 grid SmolLM2's weights came from, so that no type reproduces them exactly."""
    import shutil

    import numpy as np
    from gguf import GGMLQuantizationType as T, GGUFReader

    out = WORK / f"{base.stem}-jitter{scale:g}.gguf"
    if not out.exists():
        tmp = out.with_suffix(".partial.gguf")
        shutil.copyfile(base, tmp)
        rng = np.random.default_rng(0)
        for t in GGUFReader(tmp, "r+").tensors:
            if t.tensor_type == T.F16 and len(t.shape) == 2:
                w = t.data.astype(np.float32)
                t.data[...] = (w + rng.standard_normal(w.shape, dtype=np.float32) * (scale * w.std())
                               ).astype(np.float16)
        tmp.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--types", default="Q2_K,Q3_K_M,Q4_K_M,Q5_K_M,Q6_K")
    ap.add_argument("--jitter", default="0,0.02,0.05",
                    help="bases: SmolLM2 with this much noise in its weights (× each tensor's std; 0: as it is)")
    ap.add_argument("--chunks", type=int, default=30, help="512-token chunks of held-out text scored")
    ap.add_argument("--imatrix-chunks", type=int, default=20)
    ap.add_argument("--calibration-chunks", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--without-q41", action="store_true", help="also plan calibrated mixes without Q4_1")
    ap.add_argument("--llama-imatrix", action="store_true", help="the importance matrix by llama-imatrix")
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    plain = smollm2_f16()
    if args.llama_imatrix:
        from quantkit.measure.texts import dataset_path

        imatrix = llama_imatrix(plain, dataset_path("python-docs-calibration"), args.imatrix_chunks, args.threads)
    else:
        imatrix = quantkit_imatrix(plain, args.imatrix_chunks, args.threads)
    print(f"imatrix {imatrix.name}; load at start: {_load()}")
    for scale in [float(x) for x in args.jitter.split(",")]:
        base = jittered(plain, scale) if scale else plain
        run_base(base, imatrix, scale, args)


def _load() -> str:
    return open("/proc/loadavg").read().split(" ", 3)[:3].__str__()


def run_base(base: Path, imatrix: Path, scale: float, args) -> None:
    from gguf import GGMLQuantizationType as T

    from quantkit.imatrix.calibration import calibration_text
    from quantkit.measure.perplexity import Settings, perplexity
    from quantkit.measure.texts import dataset_path, read_text
    from quantkit.quantize import damage, mixes
    from quantkit.quantize.calibrate import calibrate, calibrated
    from quantkit.quantize.file import quantize, quantize_mix
    from quantkit.runtime import load_vocabulary

    values = mixes.importance_for(imatrix, base)
    t0 = time.perf_counter()
    measured = damage.measure(base, values, threads=args.threads)
    seconds_measure = time.perf_counter() - t0
    with load_vocabulary(base) as vocab:
        tokens = vocab.tokenize(calibration_text("python-docs").text, add_special=True)
    t0 = time.perf_counter()
    calibration = calibrate(base, measured, values, tokens, chunks=args.calibration_chunks, threads=args.threads)
    seconds_calibrate = time.perf_counter() - t0  # calibration.seconds: when it was made (it may be cached)
    print(f"\n## {base.name} (jitter {scale:g}): measured {len(measured)} tensors in {seconds_measure:.0f} s, "
          f"calibrated {len(calibration.kld)} tensors on {calibration.n_positions} positions in "
          f"{calibration.seconds:.0f} s (this run: {seconds_calibrate:.0f} s; {args.threads} threads, load {_load()})",
          flush=True)
    kinds = {"raw": measured, "calibrated": calibrated(measured, calibration)}
    if args.without_q41:
        kinds["calibrated_no_q41"] = [damage.TensorOptions(t.name, t.shape, t.base_type,
                                                           [o for o in t.options if o.type != T.Q4_1.name])
                                      for t in kinds["calibrated"]]
    rows = []
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        out = Path(tmp)
        files: list[Path] = []
        for qtype in [s.strip() for s in args.types.split(",")]:
            std = quantize(base, out / f"SmolLM2-{qtype}.gguf", qtype, imatrix=imatrix, threads=args.threads).path
            target = mixes.Target(size=std.stat().st_size, text=str(std.stat().st_size))
            row = {"type": qtype, "std": std, "size": std.stat().st_size}
            for key, options in kinds.items():
                plan = mixes.plan_mix(base, target, values, imatrix_name=imatrix.name, measured=options)
                row[key] = quantize_mix(base, out / f"SmolLM2-{qtype}-{key}.gguf", plan, imatrix=values,
                                        threads=args.threads).path
                row[key + "_plan"] = plan
                files.append(row[key])
            files.append(std)
            rows.append(row)
        t0 = time.perf_counter()
        settings = Settings(n_ctx=512, chunks=args.chunks, threads=args.threads, n_gpu_layers=0)
        results = {Path(r.path).name: r for r in perplexity([base, *files], read_text(dataset_path(
            "python-docs-heldout")), settings)}
        seconds_ppl = time.perf_counter() - t0
    print(f"scored on python-docs-heldout: {args.chunks} chunks of 512 tokens; KLD against the base; "
          f"{seconds_ppl:.0f} s, load {_load()}; base PPL {results[base.name].ppl:.3f}\n")
    extra = [k for k in kinds if k not in ("raw", "calibrated")]
    print("| size of | file bytes | standard KLD | calibrated mix KLD | ratio | raw mix KLD | ratio | "
          + "".join(f"{k} KLD | ratio | " for k in extra) + "standard PPL | calibrated mix PPL |")
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(extra) + "---:|---:|")
    for row in rows:
        std = results[row["std"].name]
        cells = [row["type"], f"{row['size']:,}", f"{std.kl.mean_kld:.5f} ± {std.kl.mean_kld_err:.5f}"]
        for key in ("calibrated", "raw", *extra):
            mix = results[row[key].name]
            cells += [f"{mix.kl.mean_kld:.5f} ± {mix.kl.mean_kld_err:.5f}", _ratio(mix.kl, std.kl)]
        cells += [f"{std.ppl:.3f}", f"{results[row['calibrated'].name].ppl:.3f}"]
        print("| " + " | ".join(cells) + " |")
    print()
    for row in rows:
        for key in kinds:
            plan = row[key + "_plan"]
            counts: dict[str, int] = {}
            for t in plan.overrides.values():
                counts[t] = counts.get(t, 0) + 1
            print(f"{row['type']} {key}: {plan.file_bytes:,} bytes, {plan.bits_per_weight} bpw, predicted "
                  f"{plan.error:.4g}, {', '.join(f'{n} {t}' for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))}")
    print(flush=True)


def _ratio(mix, std) -> str:
    r = mix.mean_kld / std.mean_kld
    err = r * ((mix.mean_kld_err / mix.mean_kld) ** 2 + (std.mean_kld_err / std.mean_kld) ** 2) ** 0.5
    return f"{r:.3f} ± {err:.3f}" + (" **loss**" if r > 1 else "")


if __name__ == "__main__":
    main()
