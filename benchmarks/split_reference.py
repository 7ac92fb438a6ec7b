"""quantkit's split GGUFs against llama.cpp's own `llama-gguf-split` (built from the same sdist), on SmolLM2:

- by tensor count (--split-max-tensors 50) and by size (--split-max-size 40M): the same shard names, the same
  tensors in each, the same tensor bytes, and whether the shard files are byte-identical to llama-gguf-split's
  (gguf's writer, whose split planning quantkit uses, counts a tensor's bytes without its alignment padding,
  llama-gguf-split with it, so a size cut can fall one tensor apart on another model; on a tensor larger than
  the size llama-gguf-split stops, gguf's writer gives it a shard of its own);
- libllama scores the same perplexity on llama-gguf-split's shards, quantkit's shards and the single file.

    python benchmarks/split_reference.py
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.llama_tools import build_tool  # noqa: E402

from quantkit.measure.texts import dataset_path, read_text
from quantkit.gguf.header import read_local_header, tensor_bytes
from quantkit.measure.perplexity import Settings, perplexity
from quantkit.gguf.split import split_gguf
from reference.smollm2 import smollm2_gguf


def _tensors(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        h = read_local_header(p)
        with open(p, "rb") as f:
            for t in h.tensors:
                f.seek(h.header_bytes + t.offset)
                out[t.name] = hashlib.sha256(f.read(tensor_bytes(t.type, t.shape))).hexdigest()
    return out


def _names(paths: list[Path]) -> list[list[str]]:
    return [[t.name for t in read_local_header(p).tensors] for p in paths]


def main() -> None:
    tool = build_tool("llama-gguf-split", jobs=1)
    single = smollm2_gguf()
    work = Path(tempfile.mkdtemp(prefix="qk-split-"))
    for mode, flag, value in (("tensors", "--split-max-tensors", "50"), ("size", "--split-max-size", "40M")):
        ref_dir, ours_dir = work / f"ref-{mode}", work / f"ours-{mode}"
        ref_dir.mkdir()
        ours_dir.mkdir()
        t0 = time.perf_counter()
        subprocess.run([str(tool), "--split", flag, value, str(single), str(ref_dir / "M")], check=True,
                       stdout=subprocess.DEVNULL)
        t_ref = time.perf_counter() - t0
        ref = sorted(ref_dir.glob("M-*.gguf"))
        copy = ours_dir / "M.gguf"
        copy.write_bytes(single.read_bytes())
        t0 = time.perf_counter()
        ours = split_gguf(copy, max_tensors=50) if mode == "tensors" else split_gguf(copy, max_size=40 * 10**6)
        t_ours = time.perf_counter() - t0
        identical = [a.read_bytes() == b.read_bytes() for a, b in zip(ref, ours)]
        print(f"{mode}: llama-gguf-split {len(ref)} shards {[len(n) for n in _names(ref)]} in {t_ref:.2f} s; "
              f"quantkit {len(ours)} shards {[len(n) for n in _names(ours)]} in {t_ours:.2f} s; "
              f"names {[p.name for p in ours] == [p.name for p in ref]}; byte-identical shards {identical}; "
              f"tensor bytes equal {_tensors(ours) == _tensors(ref) == _tensors([single])}")
        if mode == "size":
            settings = Settings(n_ctx=512, chunks=8, threads=1, n_gpu_layers=0)
            text = read_text(dataset_path("python-docs"))
            results = perplexity([single, ref[0], ours[0]], text, settings)
            for label, r in zip(("single file", "llama-gguf-split shards", "quantkit shards"), results):
                print(f"  PPL {label:<24} {r.ppl:.6f} ± {r.ppl_err:.6f}")
            same = results[0].ppl == results[1].ppl == results[2].ppl
            print(f"  identical perplexity: {same}")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
