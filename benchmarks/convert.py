"""Conversion speed and memory: quantkit vs llama.cpp's convert_hf_to_gguf.py vs a plain `cp` of the same bytes.

Makes a bf16 checkpoint with DeepSeek-R1-Distill-Qwen-1.5B's shapes (random weights, ~1.7 GB at 8 layers, ~3.5 GB
at 28) and the tiny-qwen2 test fixture's real R1 tokenizer, then for each --outtype (BF16, F16, Q8_0 by default)
times quantkit and the reference in their own processes, and `cp` of the checkpoint beside the pass-through
(BF16) case: wall time, peak RSS, the machine's load average (os.getloadavg, 1 min) when each run started, and
the ratios issue #28 sets targets for (quantkit ≤ 0.35× the reference for F16 and Q8_0, ≤ 0.3× for BF16, ≤ 1.5×
cp; peak RSS < 350 MiB). The tools run interleaved, --rounds times, each after `sync`; medians are compared,
because this machine's write speed swings from run to run. With --out the table is also written as Markdown.

    python benchmarks/convert.py [--layers 8] [--outtype F16 ...] [--rounds 3] [--threads N] [--work DIR]
                                 [--out benchmarks/convert_results.md]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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


TARGETS = {"BF16": 0.3, "F16": 0.35, "Q8_0": 0.35}  # quantkit / reference
CP_TARGET, RSS_TARGET = 1.5, 350 * 2**20


def tool_commands(ckpt: Path, work: Path, outtype: str, reference: Path | None, threads: int | None) -> dict:
    qk = [sys.executable, "-m", "quantkit", "convert", str(ckpt), "-o", str(work / "qk"), "--outtype", outtype,
          "--force"] + (["--threads", str(threads)] if threads else [])
    commands = {"quantkit": (qk, None)}
    if reference is not None:
        env = {**os.environ, "PYTHONPATH": str(reference / "gguf-py")}
        commands["reference"] = ([sys.executable, str(reference / "convert_hf_to_gguf.py"), str(ckpt),
                                  "--outtype", outtype.lower(), "--outfile", str(work / "ref.gguf")], env)
    if outtype == "BF16":
        commands["cp"] = (["cp", str(ckpt / "model.safetensors"), str(work / "copy.bin")], None)
    return commands


def run(ckpt: Path, work: Path, outtype: str, reference: Path | None, rounds: int, threads: int | None) -> dict:
    """Each tool `rounds` times, interleaved; every run starts after the previous output is deleted and the
    page cache is flushed (`sync`), so no tool pays for another's writeback."""
    commands = tool_commands(ckpt, work, outtype, reference, threads)
    samples: dict[str, list[tuple[float, int, float]]] = {tool: [] for tool in commands}
    for _ in range(rounds):
        for tool, (cmd, env) in commands.items():
            _clean(work)
            load = os.getloadavg()[0]
            samples[tool].append((*measure(cmd, env), load))
    _clean(work)
    return {"outtype": outtype, "samples": samples,
            **{tool: (statistics.median(s for s, _, _ in runs), max(r for _, r, _ in runs),
                      statistics.mean(load for _, _, load in runs)) for tool, runs in samples.items()}}


COLD = False  # --cold: every run starts with nothing of the checkpoint in the page cache


def _clean(work: Path) -> None:
    for p in (work / "copy.bin", work / "ref.gguf"):
        p.unlink(missing_ok=True)
    shutil.rmtree(work / "qk", ignore_errors=True)
    subprocess.run(["sync"], check=True)
    if COLD:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def rows(results: list[dict], size: int) -> list[dict]:
    """One row per case: quantkit's time, RSS and load, and its ratio to the reference or to cp."""
    out = []
    for r in results:
        qk, qk_rss, qk_load = r["quantkit"]
        for other, target in (("reference", TARGETS.get(r["outtype"])), ("cp", CP_TARGET)):
            if other not in r:
                continue
            s, rss, load = r[other]
            name = "convert_hf_to_gguf.py" if other == "reference" else "cp"
            out.append({"case": f"bf16 → {r['outtype']}" + (" (pass-through)" if other == "cp" else ""),
                        "vs": name, "quantkit_s": qk, "other_s": s, "ratio": qk / s, "target": target,
                        "quantkit_rss": qk_rss, "other_rss": rss, "load": (qk_load + load) / 2,
                        "gbps": size / qk / 1e9})
    return out


def report(table: list[dict], size: int, rounds: int, threads: int | None) -> str:
    lines = [f"{size / 1e9:.2f} GB of bf16 weights; median of {rounds} interleaved run(s); quantkit --threads "
             f"{threads or 'default (' + str(len(os.sched_getaffinity(0))) + ')'}; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs; page cache {'dropped before every run (--cold)' if COLD else 'kept'}", "",
             "| case | vs | quantkit s | other s | ratio | target | quantkit peak RSS MiB | other peak RSS MiB | load (1 min) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in table:
        ok = "" if row["target"] is None else (" ✓" if row["ratio"] <= row["target"] else " ✗")
        lines.append(f"| {row['case']} | {row['vs']} | {row['quantkit_s']:.2f} | {row['other_s']:.2f} | "
                     f"{row['ratio']:.2f}{ok} | ≤ {row['target']} | {row['quantkit_rss'] / 2**20:.0f}"
                     f"{' ✓' if row['quantkit_rss'] < RSS_TARGET else ' ✗'} | {row['other_rss'] / 2**20:.0f} | "
                     f"{row['load']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="layers of the R1-1.5B-shaped checkpoint (8: ~1.7 GB)")
    parser.add_argument("--outtype", action="append", help="base types to time (default: BF16, F16, Q8_0)")
    parser.add_argument("--threads", type=int, default=None, help="quantkit convert --threads (default: its own)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (needs ~3× the checkpoint size)")
    parser.add_argument("--no-reference", action="store_true", help="skip convert_hf_to_gguf.py")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each tool (median reported)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here as Markdown")
    parser.add_argument("--keep-checkpoint", type=Path, default=None,
                        help="make the checkpoint in this folder, or use the one already there (not deleted)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before every run (root, Linux): a checkpoint read from the disk, "
                             "as a 15-141 GB distill is")
    args = parser.parse_args()
    global COLD
    COLD = args.cold
    if COLD and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        raise SystemExit("--cold needs to write /proc/sys/vm/drop_caches (root on Linux)")
    reference = None
    if not args.no_reference:
        from reference.sdist import llama_cpp_source

        reference = llama_cpp_source()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        ckpt = args.keep_checkpoint or Path(tmp) / "ckpt"
        if not (ckpt / "model.safetensors").is_file():
            make_checkpoint(ckpt, args.layers)
        size = (ckpt / "model.safetensors").stat().st_size
        results = [run(ckpt, Path(tmp), t.upper(), reference, args.rounds, args.threads)
                   for t in args.outtype or ["BF16", "F16", "Q8_0"]]
    table = report(rows(results, size), size, args.rounds, args.threads)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
