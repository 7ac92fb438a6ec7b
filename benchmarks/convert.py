"""Conversion speed and memory: quantkit vs llama.cpp's convert_hf_to_gguf.py vs a plain `cp` of the same bytes.

Makes a bf16 checkpoint with DeepSeek-R1-Distill-Qwen-1.5B's shapes (random weights, ~3.5 GB at 28 layers) and
the tiny-qwen2 test fixture's real R1 tokenizer, then times each tool in its own process, printing wall time,
peak RSS and the ratios the issue sets targets for (quantkit ≤ 0.5× the reference, ≤ 1.3× cp; RSS < 1 GiB and
flat in model size: run with two --layers values to see that). The tools run interleaved, several rounds, each
after `sync`; the medians are compared, because this machine's write speed swings from run to run.

    python benchmarks/convert.py --layers 28 --layers 8 [--rounds 3] [--work DIR] [--outtype BF16]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantkit.models import find_model  # noqa: E402

_MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
            "sys.stderr.write(p.stderr.decode(errors='replace')[-2000:] if p.returncode else ''); "
            "print(p.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")


def hf_tensors(n_layer: int) -> dict[str, tuple[int, ...]]:
    m = find_model("1.5B")
    hd = m.head_dim
    shapes = {"model.embed_tokens.weight": (m.n_vocab, m.n_embd), "lm_head.weight": (m.n_vocab, m.n_embd),
              "model.norm.weight": (m.n_embd,)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (m.n_embd,), p + "post_attention_layernorm.weight": (m.n_embd,),
            p + "self_attn.q_proj.weight": (m.n_head * hd, m.n_embd), p + "self_attn.q_proj.bias": (m.n_head * hd,),
            p + "self_attn.k_proj.weight": (m.n_head_kv * hd, m.n_embd), p + "self_attn.k_proj.bias": (m.n_head_kv * hd,),
            p + "self_attn.v_proj.weight": (m.n_head_kv * hd, m.n_embd), p + "self_attn.v_proj.bias": (m.n_head_kv * hd,),
            p + "self_attn.o_proj.weight": (m.n_embd, m.n_head * hd),
            p + "mlp.gate_proj.weight": (m.n_ff, m.n_embd), p + "mlp.up_proj.weight": (m.n_ff, m.n_embd),
            p + "mlp.down_proj.weight": (m.n_embd, m.n_ff),
        }
    return shapes


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> None:
    """Random bf16 weights (normal-ish values, no NaN/Inf), streamed to disk a tensor at a time."""
    rng = np.random.default_rng(seed)
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for shape in shapes.values():
            n = int(np.prod(shape))
            for start in range(0, n, 1 << 24):
                x = rng.standard_normal(min(1 << 24, n - start), dtype=np.float32) * 0.02
                f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())


def make_checkpoint(folder: Path, n_layer: int) -> Path:
    from reference.tiny import tiny_checkpoint

    m = find_model("1.5B")
    folder.mkdir(parents=True, exist_ok=True)
    tiny = tiny_checkpoint("qwen2")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(tiny / name, folder / name)
    config = json.loads((tiny / "config.json").read_text())
    config |= {"hidden_size": m.n_embd, "intermediate_size": m.n_ff, "num_hidden_layers": n_layer,
               "num_attention_heads": m.n_head, "num_key_value_heads": m.n_head_kv, "vocab_size": m.n_vocab}
    if "layer_types" in config:
        config["layer_types"] = ["full_attention"] * n_layer
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_safetensors(folder / "model.safetensors", hf_tensors(n_layer))
    return folder


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, env=env, check=True)
    rc, seconds, rss = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return float(seconds), int(rss)


def run(n_layer: int, work: Path, outtype: str, reference: Path | None, rounds: int) -> dict:
    """Each tool `rounds` times, interleaved; every run starts after the previous output is deleted and the
    page cache is flushed (`sync`), so no tool pays for another's writeback."""
    ckpt = make_checkpoint(work / f"ckpt-{n_layer}", n_layer)
    size = (ckpt / "model.safetensors").stat().st_size
    commands = {
        "cp": (["cp", str(ckpt / "model.safetensors"), str(work / "copy.bin")], None),
        "quantkit": ([sys.executable, "-m", "quantkit", "convert", str(ckpt), "-o", str(work / "qk"),
                      "--outtype", outtype, "--force"], None),
    }
    if reference is not None:
        env = {**os.environ, "PYTHONPATH": str(reference / "gguf-py")}
        commands["reference"] = ([sys.executable, str(reference / "convert_hf_to_gguf.py"), str(ckpt),
                                  "--outtype", outtype.lower(), "--outfile", str(work / "ref.gguf")], env)
    samples: dict[str, list[tuple[float, int]]] = {tool: [] for tool in commands}
    for _ in range(rounds):
        for tool, (cmd, env) in commands.items():
            _clean(work)
            samples[tool].append(measure(cmd, env))
    _clean(work)
    shutil.rmtree(ckpt, ignore_errors=True)
    return {"layers": n_layer, "bytes": size, "samples": samples,
            **{tool: (statistics.median(s for s, _ in runs), max(r for _, r in runs)) for tool, runs in samples.items()}}


def _clean(work: Path) -> None:
    for p in (work / "copy.bin", work / "ref.gguf"):
        p.unlink(missing_ok=True)
    shutil.rmtree(work / "qk", ignore_errors=True)
    subprocess.run(["sync"], check=True)


def report(r: dict) -> None:
    n = len(r["samples"]["cp"])
    print(f"\n{r['layers']} layers, {r['bytes'] / 1e9:.2f} GB of bf16 weights; median of {n} interleaved run(s)")
    for tool in ("quantkit", "reference", "cp"):
        if tool in r:
            s, rss = r[tool]
            runs = " ".join(f"{t:.2f}" for t, _ in r["samples"][tool])
            print(f"  {tool:<10} {s:8.2f} s  {r['bytes'] / s / 1e9:6.2f} GB/s  peak RSS {rss / 2**20:8.0f} MiB"
                  f"   runs: {runs}")
    qk = r["quantkit"][0]
    if "reference" in r:
        print(f"  quantkit / reference wall time: {qk / r['reference'][0]:.2f}  (target ≤ 0.5)")
    print(f"  quantkit / cp wall time:        {qk / r['cp'][0]:.2f}  (target ≤ 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, action="append", help="layer counts to try (default: 28 and 8)")
    parser.add_argument("--outtype", default="BF16")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (needs ~4× the checkpoint size)")
    parser.add_argument("--no-reference", action="store_true", help="skip convert_hf_to_gguf.py")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each tool (median reported)")
    args = parser.parse_args()
    reference = None
    if not args.no_reference:
        from reference.sdist import llama_cpp_source

        reference = llama_cpp_source()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for n_layer in args.layers or [28, 8]:
            report(run(n_layer, Path(tmp), args.outtype, reference, args.rounds))


if __name__ == "__main__":
    main()
