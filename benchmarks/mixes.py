"""Budget mixes against llama.cpp's standard mixes at the same file size, on SmolLM2.

    python benchmarks/mixes.py [-t Q3_K_M,Q4_K_M,Q5_K_M] [--chunks 30] [--imatrix-chunks 20] [--threads 2]

The base is the embedded SmolLM2 taken through quantkit's export and convert to F16 (cached). One importance
matrix is made by llama.cpp's own llama-imatrix (reference/llama_tools.py builds it) on python-docs'
calibration part; every file, standard or planned, is quantized with it. For each standard type, a budget mix
is planned with `--target-size` = the standard file's size, and both are scored on python-docs' held-out part
(disjoint from the calibration text): mean KL-divergence from the F16 base, quantkit's perplexity (llama-perplexity's
numbers). A second set of mixes is planned without Q4_1 among the candidates: SmolLM2's only published weights are
a Q4_1 file, so its F16 base lies on Q4_1's grid and Q4_1 reproduces it exactly — an advantage no real base
gives. `--jitter 0.05` scores a copy of the base with noise of 5 % of each tensor's std added to its weights,
off that grid (with the imatrix of the original: activations barely move). Never imported by the package.
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
    ap.add_argument("-t", "--types", default="Q3_K_M,Q4_K_M,Q5_K_M")
    ap.add_argument("--chunks", type=int, default=30, help="512-token chunks of held-out text scored")
    ap.add_argument("--imatrix-chunks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jitter", type=float, default=0.0,
                    help="score a copy of the base with this much noise in its weights (× each tensor's std)")
    ap.add_argument("--relative", action="store_true",
                    help="plan on errors relative to each tensor's output energy (an experiment)")
    args = ap.parse_args()

    from gguf import GGMLQuantizationType as T

    from quantkit.quantize import damage, mixes
    from quantkit.measure.texts import dataset_path, read_text
    from quantkit.measure.perplexity import Settings, perplexity
    from quantkit.quantize.file import quantize, quantize_mix

    WORK.mkdir(parents=True, exist_ok=True)
    base = smollm2_f16()
    imatrix_base = base
    if args.jitter:
        base = jittered(base, args.jitter)
    calibration = dataset_path("python-docs-calibration")
    heldout = dataset_path("python-docs-heldout")
    t0 = time.perf_counter()
    imatrix = llama_imatrix(imatrix_base, calibration, args.imatrix_chunks, args.threads)
    print(f"base {base.name} ({base.stat().st_size:,} bytes); imatrix {imatrix.name} by llama-imatrix "
          f"({time.perf_counter() - t0:.0f} s)")
    values = mixes.importance_for(imatrix, base)

    t0 = time.perf_counter()
    measured = damage.measure(base, values, threads=args.threads, relative=args.relative)
    seconds_measure = time.perf_counter() - t0
    print(f"measured {len(measured)} tensors × their candidate types in {seconds_measure:.1f} s "
          f"({args.threads} threads)")
    without_q41 = [damage.TensorOptions(t.name, t.shape, t.base_type, [o for o in t.options if o.type != T.Q4_1.name])
                   for t in measured]

    rows = []
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        out = Path(tmp)
        files: list[Path] = []
        for qtype in [s.strip() for s in args.types.split(",")]:
            std = quantize(base, out / f"SmolLM2-{qtype}.gguf", qtype, imatrix=imatrix, threads=args.threads).path
            target = mixes.Target(size=std.stat().st_size, text=str(std.stat().st_size))
            row = {"type": qtype, "std": std, "size": std.stat().st_size}
            for key, options in (("mix", measured), ("mix_no_q41", without_q41)):
                plan = mixes.plan_mix(base, target, values, imatrix_name=imatrix.name, measured=options)
                path = quantize_mix(base, out / f"SmolLM2-{qtype}-{key}.gguf", plan, imatrix=values,
                                    threads=args.threads).path
                row[key] = path
                row[key + "_plan"] = plan
                files.append(path)
            files.append(std)
            rows.append(row)
        t0 = time.perf_counter()
        settings = Settings(n_ctx=512, chunks=args.chunks, threads=args.threads, n_gpu_layers=0)
        results = {Path(r.path).name: r for r in perplexity([base, *files], read_text(heldout), settings)}
        seconds_ppl = time.perf_counter() - t0

        print(f"\nscored on python-docs-heldout: {args.chunks} chunks of 512 tokens; KLD against the F16 base; "
              f"{seconds_ppl:.0f} s\n")
        print("| size of | file bytes | standard KLD | mix KLD | mix / standard | mix without Q4_1: bytes | KLD | "
              "ratio | standard PPL | mix PPL |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            std = results[row["std"].name]
            mix = results[row["mix"].name]
            alt = results[row["mix_no_q41"].name]
            print(f"| {row['type']} | {row['size']:,} | {std.kl.mean_kld:.5f} ± {std.kl.mean_kld_err:.5f} | "
                  f"{mix.kl.mean_kld:.5f} ± {mix.kl.mean_kld_err:.5f} | {mix.kl.mean_kld / std.kl.mean_kld:.3f} | "
                  f"{alt.file_size:,} ({alt.file_size / row['size'] - 1:+.2%}) | {alt.kl.mean_kld:.5f} | "
                  f"{alt.kl.mean_kld / std.kl.mean_kld:.3f} | {std.ppl:.3f} | {mix.ppl:.3f} |")
        print(f"\nbase PPL {results[base.name].ppl:.3f}")
        for row in rows:
            for key in ("mix", "mix_no_q41"):
                plan = row[key + "_plan"]
                counts: dict[str, int] = {}
                for t in plan.overrides.values():
                    counts[t] = counts.get(t, 0) + 1
                print(f"{row['type']} {key}: {plan.file_bytes:,} bytes, {plan.bits_per_weight} bpw, "
                      f"{', '.join(f'{n} {t}' for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))}")


if __name__ == "__main__":
    main()
