"""quantkit's quantized files against llama.cpp's own llama-quantize, byte for byte, from the same base file.

    python benchmarks/quantize.py [BASE.gguf] [-t Q4_0,Q4_K_M,...] [--threads N]

Without BASE, the embedded SmolLM2 goes through quantkit's own export and convert to an F16 base first.
llama-quantize is built once from the llama.cpp tree vendored in the llama-cpp-python 0.3.36 sdist
(reference/llama_tools.py). For each type: whether the two files are identical, and both wall times.
Never imported by the package.
"""
from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.llama_tools import BENCH_CACHE, build_tool  # noqa: E402

DEFAULT_TYPES = "Q2_K,Q3_K_M,Q4_0,Q4_K_S,Q4_K_M,Q5_K_M,Q6_K,Q8_0"


def smollm2_base(folder: Path) -> Path:
    from quantkit.convert import convert
    from quantkit.convert.embedded import embedded_checkpoint

    return convert(embedded_checkpoint(), folder, outtype="F16").base.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", nargs="?", type=Path)
    ap.add_argument("-t", "--types", default=DEFAULT_TYPES)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from quantkit.quant_types import parse_types
    from quantkit.quantize.file import quantize

    binary = build_tool("llama-quantize")
    BENCH_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BENCH_CACHE) as tmp:
        out = Path(tmp)
        base = args.base or smollm2_base(out / "base")
        print(f"base: {base.name}; llama-quantize: {binary}; threads {args.threads}\n")
        print("| type | identical bytes | quantkit s | llama-quantize s | ratio |")
        print("|---|:---:|---:|---:|---:|")
        same = 0
        types = parse_types([args.types])
        for qtype in types:
            ours, theirs = out / f"quantkit-{qtype}.gguf", out / f"llama-{qtype}.gguf"
            t0 = time.perf_counter()
            quantize(base, ours, qtype, threads=args.threads)
            t1 = time.perf_counter()
            subprocess.run([str(binary), str(base), str(theirs), qtype, str(args.threads)], check=True,
                           capture_output=True)
            t2 = time.perf_counter()
            identical = filecmp.cmp(ours, theirs, shallow=False)
            same += identical
            print(f"| {qtype} | {'yes' if identical else 'NO'} | {t1 - t0:.2f} | {t2 - t1:.2f} | "
                  f"{(t1 - t0) / (t2 - t1):.2f} |")
        print(f"\n{same} of {len(types)} types byte-identical to llama-quantize")


if __name__ == "__main__":
    main()
