"""Steps 4 and 5 of benchmarks/gpu.sh: quantkit against llama.cpp's own tools on the models gpu.sh made, and the
table (check, quantkit, reference, ratio, target, pass/fail) printed last; results.json and table.txt in --out, each
command's output in --logs. Run by gpu.sh; never imported by the package.

GPU mode uses the sizes of issue #17 (pp512, tg128, 512-token perplexity chunks, all layers offloaded); CPU mode
the same steps at sizes a 2-core machine finishes in minutes, where the offload rows only say what a CPU build does.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SIZES = {
    "gpu": dict(pp=512, tg=128, reps=3, ppl_ctx=512, ppl_chunks=16, chat_tokens=128, threads=None, serve_tokens=128,
                serve_levels=(1, 8, 32)),
    "cpu": dict(pp=64, tg=16, reps=1, ppl_ctx=128, ppl_chunks=4, chat_tokens=16, threads=2, serve_tokens=8,
                serve_levels=(1, 4)),
}
MEM_CTX = 4096
BUFFER = re.compile(r"(\S+) (model|KV|compute|output) buffer size =\s*([\d.]+) MiB")
LAYERS_ON_GPU = re.compile(r"(\d+)/(\d+) layers on GPU")


@dataclass
class Row:
    check: str
    quantkit: str
    reference: str
    ratio: float | None
    target: str
    ok: bool | None  # None: information, no target

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else "pass" if self.ok else "FAIL"


class Runner:
    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs, self.env = logs, env

    def run(self, name: str, cmd: list[str], timeout: float = 300, env: dict | None = None) -> tuple[int, str, str, float]:
        """Run `cmd`, log its command line, output and time to logs/name.log; (rc, stdout, stderr, seconds)."""
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**self.env, **(env or {})})
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = 124, _text(e.stdout), _text(e.stderr) + f"\n[timed out after {timeout}s]"
        seconds = time.perf_counter() - t0
        (self.logs / f"{name}.log").write_text(
            f"$ {' '.join(cmd)}\n[rc {rc}, {seconds:.2f}s]\n--- stdout\n{out}\n--- stderr\n{err}\n")
        print(f"  {name}: rc {rc}, {seconds:.1f}s", file=sys.stderr, flush=True)
        return rc, out, err, seconds


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    return f"{x:,.1f}{unit}" if abs(x) >= 10 else f"{x:.3g}{unit}"


def at_least(ratio: float | None, target: float, judged: bool) -> bool | None:
    """A speed row's verdict: judged on the GPU (issue #17's targets); information in CPU mode, where the machine
    is shared and the reference tools are a generic x86-64 build."""
    if not judged:
        return None
    return ratio is not None and ratio >= target


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def weight_bytes_per_token(path: Path) -> tuple[int, int]:
    """(bytes of the weights one generated token reads, n_layer): every tensor but token_embd (one row of it)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    total = sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    n_layer = int(reader.get_field("qwen2.block_count").contents())
    return total + int(embd.n_bytes) // int(embd.shape[-1]), n_layer


def copy_bandwidth(mode: str) -> tuple[float | None, str]:
    """Bytes per second of a large copy (read + write counted): device-to-device through torch on the GPU, a
    numpy copy in host memory on the CPU."""
    if mode == "gpu":
        code = ("import torch,time\nx=torch.empty(2**31,dtype=torch.uint8,device='cuda');y=torch.empty_like(x)\n"
                "for _ in range(3): y.copy_(x)\ntorch.cuda.synchronize();s=torch.cuda.Event(True);e=torch.cuda.Event(True)\n"
                "s.record()\nfor _ in range(20): y.copy_(x)\ne.record();torch.cuda.synchronize()\n"
                "print(2*20*x.numel()/(s.elapsed_time(e)/1e3))")
        how = "torch device-to-device copy of 2 GiB, ×20, CUDA events"
    else:
        code = ("import numpy as np,time\nx=np.ones(2**28,np.uint8);y=np.empty_like(x)\nnp.copyto(y,x)\n"
                "t=time.perf_counter()\nfor _ in range(5): np.copyto(y,x)\nprint(2*5*x.size/(time.perf_counter()-t))")
        how = "numpy host copy of 256 MiB, ×5"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return float(out.stdout.strip().splitlines()[-1]), how
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None, how + " (failed)"


def llama_bench_tps(out: str) -> dict[str, float]:
    tps = {}
    for r in json.loads(out):
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        tps[test] = r["avg_ts"]
    return tps


def buffers(log: str) -> dict[tuple[str, str], float]:
    """{(device, kind): bytes} from llama.cpp's "CUDA0 model buffer size = 123.45 MiB" lines (summed per key)."""
    found: dict[tuple[str, str], float] = {}
    for dev, kind, mib in BUFFER.findall(log):
        found[(dev, kind)] = found.get((dev, kind), 0.0) + float(mib) * 2**20
    return found


class Serve:
    """Aggregate generated tokens/s of N concurrent /v1/completions requests against a server on `port`."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def wait(self, proc: subprocess.Popen, seconds: float) -> bool:
        deadline = time.time() + seconds
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.5)
        return False

    def one(self, max_tokens: int, i: int) -> int:
        body = json.dumps({"prompt": f"Request {i}: count from one to a hundred.", "max_tokens": max_tokens,
                           "temperature": 0, "ignore_eos": True}).encode()
        req = urllib.request.Request(self.base + "/v1/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            return int(json.load(r)["usage"]["completion_tokens"])

    def aggregate(self, n: int, max_tokens: int) -> float:
        counts = [0] * n

        def worker(i: int) -> None:
            counts[i] = self.one(max_tokens, i)

        self.one(4, -1)  # warm-up
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - t0)


def seconds_left() -> float:
    """Seconds left of gpu.sh's budget (GPU_CHECK_START, GPU_CHECK_BUDGET); unlimited when they are unset."""
    start, budget = os.environ.get("GPU_CHECK_START"), os.environ.get("GPU_CHECK_BUDGET")
    return float(start) + float(budget) - time.time() if start and budget else float("inf")


def serve_rows(run: Runner, mode: str, tools: Path, q4: Path, size: dict, ngl_ref: str,
               no_repack: list[str]) -> list[Row]:
    if seconds_left() < 100:
        return [Row("serve (skipped: under 100 s of the budget left)", "—", "—", None, "skipped", None)]
    rc, *_ = run.run("serve-help", [sys.executable, "-m", "quantkit", "serve", "--help"], timeout=60)
    if rc != 0:
        return [Row("serve (quantkit serve not on this branch)", "—", "—", None, "skipped", None)]
    levels, n_max, ctx = size["serve_levels"], max(size["serve_levels"]), 0
    ctx = n_max * (64 + size["serve_tokens"]) * 2
    threads = ["--threads", str(size["threads"])] if size["threads"] else []
    servers = {
        "quantkit": [sys.executable, "-m", "quantkit", "serve", str(q4), "--port", "18431", "--parallel", str(n_max),
                     "--ctx", str(ctx), "-ngl", "all" if mode == "gpu" else "0", *threads],
        "llama-server": [str(tools / "llama-server"), "-m", str(q4), "--port", "18432", "-np", str(n_max),
                         "-c", str(ctx), "-ngl", ngl_ref, *no_repack, *(["-t", str(size["threads"])] if size["threads"] else [])],
    }
    tps: dict[str, dict[int, float | None]] = {}
    for name, cmd in servers.items():
        port = int(cmd[cmd.index("--port") + 1])
        log = open(run.logs / f"serve-{name}.log", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=run.env, start_new_session=True)
        client = Serve(port)
        tps[name] = {}
        try:
            if client.wait(proc, 180):
                for n in levels:
                    try:
                        tps[name][n] = client.aggregate(n, size["serve_tokens"])
                    except OSError as e:
                        print(f"  serve {name} x{n}: {e}", file=sys.stderr)
                        tps[name][n] = None
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    rows = []
    for n in levels:
        q, r = tps["quantkit"].get(n), tps["llama-server"].get(n)
        ratio = _ratio(q, r)
        rows.append(Row(f"serve ×{n} aggregate tok/s", _fmt(q), _fmt(r), ratio, "≥ 0.95",
                        at_least(ratio, 0.95, mode == "gpu")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["gpu", "cpu"], required=True)
    ap.add_argument("--tools", type=Path, required=True)
    ap.add_argument("--q4", type=Path, required=True)
    ap.add_argument("--q8", type=Path, required=True)
    ap.add_argument("--logs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pytest-log", type=Path, required=True)
    ap.add_argument("--pytest-rc", type=int, required=True)
    a = ap.parse_args()
    size, gpu = SIZES[a.mode], a.mode == "gpu"
    run = Runner(a.logs, dict(os.environ))
    qk = [sys.executable, "-m", "quantkit"]
    threads = ["--threads", str(size["threads"])] if size["threads"] else []
    ngl_qk, ngl_ref = ("all", "99") if gpu else ("0", "0")
    # the same switch on both sides: quantkit turns ggml's weight repacking off on AMX CPUs (its AMX path crashes)
    from quantkit.runtime.devices import extra_buffers_default

    repack = extra_buffers_default()
    no_repack = [] if repack else ["--no-repack"]
    rows: list[Row] = []
    tg_q4 = tg_q4_ref = None

    # the tests that need a GPU
    tail = (a.pytest_log.read_text().strip().splitlines() or ["no output"])[-1]
    passed = re.search(r"(\d+) passed", tail)
    rows.append(Row("pytest -k 'gpu or offload'", tail[:40], "—", None, "pass" if gpu else "skip on CPU",
                    (a.pytest_rc == 0 and passed is not None) if gpu else a.pytest_rc in (0, 5)))

    # bench: quantkit bench vs llama-bench, both quant types
    for q in (a.q4, a.q8):
        qtype = q.stem.rsplit("-", 1)[-1]
        common = ["-p", str(size["pp"]), "-n", str(size["tg"]), "-r", str(size["reps"])]
        rc1, out1, *_ = run.run(f"bench-quantkit-{qtype}", [*qk, "bench", str(q), *common, "-ngl", ngl_qk, *threads,
                                                            "--json"])
        rc2, out2, *_ = run.run(f"bench-llama-{qtype}", [str(a.tools / "llama-bench"), "-m", str(q), *common,
                                                         "-ngl", ngl_ref, "-o", "json", "--repack", str(int(repack)),
                                                         *(["-t", str(size["threads"])] if size["threads"] else [])])
        ours = {r["test"]: r["mean_tps"] for r in json.loads(out1)} if rc1 == 0 else {}
        ref = llama_bench_tps(out2) if rc2 == 0 else {}
        for test in (f"pp{size['pp']}", f"tg{size['tg']}"):
            ratio = _ratio(ours.get(test), ref.get(test))
            rows.append(Row(f"{test} {qtype} tok/s", _fmt(ours.get(test)), _fmt(ref.get(test)), ratio, "≥ 0.95",
                            at_least(ratio, 0.95, gpu)))
        if qtype == "Q4_K_M":
            tg_q4, tg_q4_ref = ours.get(f"tg{size['tg']}"), ref.get(f"tg{size['tg']}")

    # the memory-bandwidth bound of tg for Q4_K_M
    per_token, n_layer = weight_bytes_per_token(a.q4)
    bw, how = copy_bandwidth(a.mode)
    bound = bw / per_token if bw else None
    ratio = _ratio(tg_q4, bound)
    rows.append(Row(f"tg{size['tg']} Q4_K_M vs bandwidth bound", _fmt(tg_q4), _fmt(bound), ratio, "≥ 0.85",
                    at_least(ratio, 0.85, gpu)))
    # the same bound for llama.cpp itself: tells a slow quantkit from a bound that a model this small cannot reach
    rows.append(Row(f"tg{size['tg']} Q4_K_M llama-bench vs bound", _fmt(tg_q4_ref), _fmt(bound),
                    _ratio(tg_q4_ref, bound), "—", None))

    # perplexity: the same text, the same chunks, wall-clock time of each process (model load included)
    text = Path(tempfile.mkdtemp()) / "perplexity-text.txt"  # quantkit's own sources: present wherever it runs
    text.write_text("".join(p.read_text() for p in sorted((ROOT / "quantkit").rglob("*.py"))))
    ctx, chunks = str(size["ppl_ctx"]), str(size["ppl_chunks"])
    rc1, out1, _, t_qk = run.run("perplexity-quantkit", [*qk, "perplexity", str(a.q4), "--text-file", str(text),
                                                         "-c", ctx, "--chunks", chunks, "-ngl", ngl_qk, *threads,
                                                         "--json"])
    rc2, out2, err2, t_ref = run.run("perplexity-llama", [str(a.tools / "llama-perplexity"), "-m", str(a.q4),
                                                          "-f", str(text), "-c", ctx, "--chunks", chunks,
                                                          "-ngl", ngl_ref, *no_repack,
                                                          *(["-t", str(size["threads"])] if size["threads"] else [])])
    text.unlink()
    ppl_qk = json.loads(out1)["results"][0]["ppl"] if rc1 == 0 else None
    m = re.search(r"Final estimate: PPL = ([\d.]+)", out2 + err2)
    ppl_ref = float(m.group(1)) if m and rc2 == 0 else None
    speed = _ratio(t_ref, t_qk) if rc1 == 0 and rc2 == 0 else None
    rows.append(Row(f"perplexity time ({chunks}×{ctx})", _fmt(t_qk, " s"), _fmt(t_ref, " s"), speed,
                    "≥ 0.95 (speed)", at_least(speed, 0.95, gpu)))
    ratio = _ratio(ppl_qk, ppl_ref)
    rows.append(Row("perplexity value", _fmt(ppl_qk), _fmt(ppl_ref), ratio, "1 ± 0.01",
                    ratio is not None and abs(ratio - 1) <= 0.01))

    # chat --prompt --json: generation speed; with QUANTKIT_DEBUG the llama.cpp log gives the buffers it allocated
    def chat(n_tokens: int, ngl: str) -> list[str]:
        return [*qk, "-v", "chat", str(a.q4), "-p", "Count from one to a hundred.", "-n", str(n_tokens),
                "-c", str(MEM_CTX), "--seed", "1", "--json", "-ngl", ngl, *threads]

    rc, out, err, _ = run.run("chat-all", chat(size["chat_tokens"], ngl_qk), env={"QUANTKIT_DEBUG": "1"})
    gen_tps = json.loads(out)["gen_tps"] if rc == 0 else None
    ratio = _ratio(gen_tps, tg_q4)
    rows.append(Row("chat --prompt gen tok/s (vs bench tg)", _fmt(gen_tps), _fmt(tg_q4), ratio, "—", None))
    reported = buffers(err)

    # -ngl auto: how many layers quantkit puts on the GPU (all of them fit an H200)
    rc, out, err_auto, _ = run.run("chat-auto", chat(1, "auto"))
    m = LAYERS_ON_GPU.search(err_auto)
    auto = int(m.group(1)) if m else None
    want = n_layer + 1 if gpu else 0
    rows.append(Row("-ngl auto layers on GPU", _fmt(auto), f"{want} ({'all' if gpu else 'CPU build'})", None,
                    "all" if gpu else "0", auto == want))

    # estimate-memory against what llama.cpp reported (the chat-all load: ctx 4096, its n_ubatch and flash attn)
    ub = re.search(r"n_ubatch\s*=\s*(\d+)", err)
    fa = re.search(r"flash_attn\s*=\s*(\w+)", err)
    est_cmd = [*qk, "estimate-memory", str(a.q4), "-t", "Q4_K_M", "-c", str(MEM_CTX), "--json",
               "--ubatch", ub.group(1) if ub else "512"]
    if fa and fa.group(1) in ("disabled", "0", "false"):
        est_cmd.append("--no-flash-attn")
    if gpu:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
        vram_gib = float(smi.stdout.split()[0]) / 1024 if smi.returncode == 0 else 139.0
        est_cmd += ["--vram", f"{vram_gib:.1f}"]
    rc, out, *_ = run.run("estimate-memory", est_cmd)
    est = json.loads(out)["types"][0] if rc == 0 else None
    dev = next((d for d, _ in reported if re.fullmatch(r"CUDA\d+", d)), None) if gpu else None
    if est is not None:
        if gpu:
            pred = {"model": est["weights_bytes"] - est["cpu_only_bytes"], "KV": est["kv_bytes"],
                    "compute": est["compute_bytes"]}
            got = {k: reported.get((dev, k)) for k in pred}
            total_pred, label = est["fit"]["gpu_bytes"], f"GPU total ({dev})"
        else:
            pred = {"model": est["weights_bytes"], "KV": est["kv_bytes"], "compute": est["compute_bytes"]}
            got = {k: sum(v for (d, kind), v in reported.items() if kind == k and d.startswith("CPU")) or None
                   for k in pred}
            total_pred, label = sum(pred.values()), "CPU total"
        for k in pred:
            ratio = _ratio(pred[k], got[k])
            rows.append(Row(f"estimate {k} buffer", _fmt(pred[k] / 2**20, " MiB"),
                            _fmt(got[k] / 2**20 if got[k] else None, " MiB"), ratio, "—", None))
        got_total = sum(v for v in got.values() if v) or None
        ratio = _ratio(total_pred, got_total)
        rows.append(Row(f"estimate {label}", _fmt(total_pred / 2**20, " MiB"),
                        _fmt(got_total / 2**20 if got_total else None, " MiB"), ratio, "1 ± 0.05",
                        ratio is not None and abs(ratio - 1) <= 0.05))

    rows += serve_rows(run, a.mode, a.tools, a.q4, size, ngl_ref, no_repack)

    facts = dict(repack=repack, mode=a.mode, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), bandwidth_bytes_s=bw,
                 bandwidth_how=how, bytes_per_token_q4=per_token, n_layer=n_layer, buffers_reported={
                     f"{d} {k}": v for (d, k), v in reported.items()}, device=_device(gpu))
    (a.out / "results.json").write_text(json.dumps(dict(facts, rows=[asdict(r) for r in rows]), indent=2) + "\n")
    table = render(rows, facts)
    (a.out / "table.txt").write_text(table + "\n")
    print(table)
    sys.exit(0 if all(r.ok is not False for r in rows) else 1)


def _device(gpu: bool) -> str:
    if gpu and shutil.which("nvidia-smi"):
        p = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True)
        return p.stdout.strip()
    return f"CPU, {os.cpu_count()} cores"


def render(rows: list[Row], facts: dict) -> str:
    head = ("check", "quantkit", "reference", "ratio", "target", "result")
    body = [(r.check, r.quantkit, r.reference, "—" if r.ratio is None else f"{r.ratio:.3f}", r.target, r.verdict)
            for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    bw = facts["bandwidth_bytes_s"]
    notes = [f"quantkit gpu check · {facts['mode']} mode · {facts['date']} · {facts['device']}",
             f"bandwidth bound: {facts['bytes_per_token_q4'] / 2**20:.1f} MiB of Q4_K_M weights per token / "
             f"{bw / 1e9 if bw else float('nan'):.0f} GB/s ({facts['bandwidth_how']})"]
    return "\n".join(notes + [line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


if __name__ == "__main__":
    main()
