"""`quantkit serve` against llama.cpp's llama-server and llama-cpp-python's servers: aggregate generation tokens/s
and time to first token (TTFT) at several concurrencies, on the same GGUF, prompts, threads and total context.

    python benchmarks/serve.py [MODEL.gguf] [--concurrency 1,4,8,16] [--max-tokens 128] [--threads N]
           [--ctx 4096] [--parallel 16] [--rounds 1] [--servers llama-server,llama_cpp.server,example,quantkit]
           [--out benchmarks/serve_results.md] [--quick] [--build-only]

Servers, each a subprocess on 127.0.0.1 (a free port), waited for on its health endpoint, warmed up with one
request, measured, and stopped (also on Ctrl-C or an error):
  llama-server       built from the llama.cpp tree vendored in the llama-cpp-python 0.3.36 sdist (the one build
                     tree of reference/llama_tools.py), -np PARALLEL -c CTX --kv-unified
  llama_cpp.server   llama-cpp-python's own server (one sequence, n_ctx CTX); needs
                     `pip install 'llama-cpp-python[server]'` (sse-starlette, starlette-context, pydantic-settings)
  example            examples/server/server.py of the llama-cpp-python sdist (batched, low-level bindings like
                     quantkit's), n_seq_max PARALLEL, n_ctx CTX, kv_unified
  quantkit           `quantkit serve MODEL --parallel PARALLEL --ctx CTX`
All servers are started first and then take turns at each concurrency level, so that noise on a shared machine
hits all alike; the CPU time an idle server burns while another is measured is printed as a check.

Every request is a streaming chat completion of one of a fixed list of prompts at temperature 0 (seed 1), at most
MAX_TOKENS tokens; TTFT is the time to the first content or reasoning delta; generated tokens are those each
server reports in `usage` (falling back to counting deltas where a server sends no usage, marked ≈). At each
concurrency C, max(8, 2·C) requests are sent with C in flight at a time. MODEL defaults to the embedded
SmolLM2-135M-Instruct. Prints one table and the ratios quantkit / llama-server (issue #23: ≥ 1.0 at every
concurrency) and quantkit / llama_cpp.server at 8 (target ≥ 3), and writes them as Markdown to --out
(benchmarks/serve_results.md by default; --quick writes nothing unless --out is given). Never imported by the
package.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference.llama_tools import BENCH_CACHE, build_tool  # noqa: E402

HOST = "127.0.0.1"
SEED = 1
PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a short poem about the sea at night.",
    "What are three tips for learning a new language?",
    "Describe the water cycle in simple terms.",
    "Give me a recipe for a simple tomato soup.",
    "Why is the sky blue? Answer in a few sentences.",
    "List five animals that live in the Arctic and say one thing about each.",
    "Tell a short story about a robot who wants to paint.",
    "How do I make a good cup of tea?",
    "What is the difference between weather and climate?",
    "Summarize the plot of a fairy tale you know.",
    "Explain what a computer program is to a ten-year-old.",
    "Write a friendly email inviting a colleague to lunch.",
    "What should I pack for a weekend hiking trip?",
    "Describe how bees make honey.",
    "Give three reasons why sleep is important.",
]
# what each server needs beyond quantkit's own environment, and how to get it
SERVER_EXTRAS = {
    "llama_cpp.server": (["sse_starlette", "starlette_context", "pydantic_settings", "fastapi", "uvicorn"],
                         "pip install 'llama-cpp-python[server]==0.3.36'"),
    "example": (["fastapi", "uvicorn", "jinja2", "numpy", "openai", "pydantic", "websockets"],
                "pip install fastapi uvicorn jinja2 numpy openai pydantic websockets"),
    "quantkit": (["fastapi", "uvicorn"], "make setup-test (quantkit's serve dependencies)"),
}


# ---- the servers --------------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    command: list[str]
    health: str  # path answering 200 once the model is loaded
    version: str
    settings: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    model_id: str = "model"
    idle_cpu: float = 0.0  # CPU seconds burnt while other servers were measured
    count_check: str = ""  # how its streamed deltas compare with its own token count

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def llama_server(args, model: Path, port: int) -> Server:
    binary = build_tool("llama-server")
    cmd = [str(binary), "-m", str(model), "--host", HOST, "--port", str(port), "-t", str(args.threads), "-tb",
           str(args.threads), "-c", str(args.ctx), "-np", str(args.parallel), "--kv-unified", "-ngl", "0",
           "-fa", "auto", "--reasoning-format", "deepseek", "--no-webui", *([] if args.extra_buffers else ["-nr"])]
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    version_line = next((line for line in (version.stdout + version.stderr).splitlines()
                         if line.startswith("version")), "version unknown")
    return Server("llama-server", cmd, "/health", f"llama-server {version_line} (sdist 0.3.36, Release, native)",
                  " ".join(cmd[7:]), port=port)


def patched(args) -> list[str]:
    """The launcher that turns ggml's extra buffers off in llama-cpp-python programs where that is needed."""
    return [] if args.extra_buffers else [str(ROOT / "benchmarks" / "no_extra_buffers.py")]


def llama_cpp_server(args, model: Path, port: int) -> Server:
    import llama_cpp

    cmd = [sys.executable, *patched(args), "-m", "llama_cpp.server", "--model", str(model), "--host", HOST,
           "--port", str(port), "--n_ctx", str(args.ctx), "--n_threads", str(args.threads), "--n_threads_batch",
           str(args.threads), "--n_gpu_layers", "0", "--flash_attn", "true",
           # by default a new request interrupts the one being generated: queue them instead, as clients expect
           "--interrupt_requests", "false"]
    settings = " ".join(cmd[cmd.index("--n_ctx"):]) + (" (extra buffers off)" if patched(args) else "")
    return Server("llama_cpp.server", cmd, "/v1/models", f"llama-cpp-python {llama_cpp.__version__} (wheel)",
                  settings, port=port)


def example_server(args, model: Path, port: int, scratch: Path) -> Server:
    import llama_cpp

    script = sdist_file("examples/server/server.py")
    config = {"server": {"host": HOST, "port": port},
              "model": {"path": str(model), "alias": "model", "n_ctx": args.ctx, "n_seq_max": args.parallel,
                        "threads": args.threads, "threads_batch": args.threads, "kv_unified": True,
                        "n_gpu_layers": 0, "store_logits": False}}
    path = scratch / "example-server.json"
    path.write_text(json.dumps(config, indent=1))
    cmd = [sys.executable, *patched(args), str(script), "-C", str(path)]
    settings = json.dumps({k: v for k, v in config["model"].items() if k not in ("path", "alias")})
    return Server("example", cmd, "/healthz",
                  f"llama-cpp-python 0.3.36 sdist examples/server/server.py on the llama_cpp {llama_cpp.__version__} "
                  f"wheel", settings + (" (extra buffers off)" if patched(args) else ""), port=port)


def quantkit_server(args, model: Path, port: int) -> Server:
    import quantkit

    cmd = [sys.executable, "-m", "quantkit", "serve", str(model), "--parallel", str(args.parallel), "--ctx",
           str(args.ctx), "--threads", str(args.threads), "-ngl", "0", "--host", HOST, "--port", str(port)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return Server("quantkit", cmd, "/health", f"quantkit {quantkit.__version__} ({commit.stdout.strip() or '?'}), "
                  f"llama-cpp-python {version('llama-cpp-python')} wheel", " ".join(cmd[5:cmd.index("--host")]),
                  port=port)


def sdist_file(member: str) -> Path:
    """A file of the llama-cpp-python 0.3.36 sdist (beside its vendored llama.cpp), extracted once."""
    from reference.sdist import VERSION, _download

    dest = BENCH_CACHE / f"llama_cpp_python-{VERSION}" / member
    if not dest.exists():
        with tarfile.open(_download()) as tar:
            data = tar.extractfile(f"llama_cpp_python-{VERSION}/{member}").read()
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return dest


def missing_modules(name: str) -> str | None:
    """None when `name`'s server can start here, else why not and how to fix it."""
    if name == "quantkit":
        help_text = subprocess.run([sys.executable, "-m", "quantkit", "serve", "--help"], capture_output=True,
                                   text=True, cwd=ROOT)
        if help_text.returncode != 0 or "--parallel" not in help_text.stdout:
            return "this checkout has no `quantkit serve --parallel` (merge the serve branch)"
    modules, hint = SERVER_EXTRAS.get(name, ([], ""))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"missing Python modules {', '.join(missing)}: {hint}" if missing else None


def start(server: Server, scratch: Path) -> None:
    server.log = scratch / f"{server.name}.log"
    with open(server.log, "wb") as log:
        # its own process group, so that stopping it also stops whatever it spawned
        server.proc = subprocess.Popen(server.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                       env=os.environ | server.env, start_new_session=True)


def wait_ready(server: Server, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{tail(server.log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + server.health, timeout=2).status_code == 200:
                models = httpx.get(server.url + "/v1/models", timeout=5)
                if models.status_code == 200 and models.json().get("data"):
                    server.model_id = models.json()["data"][0]["id"]
                return
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s:\n{tail(server.log)}")


def stop(server: Server) -> None:
    if server.proc is None or server.proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(wait)
            return


def tail(path: Path | None, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path and path.exists() else ""


def cpu_seconds(server: Server) -> float:
    """utime + stime of the server's main process (all its threads)."""
    try:
        fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, AttributeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the client ---------------------------------------------------------------------------------------------

@dataclass
class Sample:
    ok: bool
    tokens: int = 0
    from_usage: bool = True
    ttft: float = 0.0
    latency: float = 0.0
    error: str = ""


async def one_request(client, server: Server, prompt: str, max_tokens: int) -> Sample:
    body = {"model": server.model_id, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "seed": SEED, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, deltas, usage = None, 0, None
    try:
        async with client.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                return Sample(False, error=f"HTTP {response.status_code}: {text[:200]}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("reasoning_content"):
                        deltas += 1
                        first = first or time.perf_counter()
    except Exception as e:  # a failed request is counted and shown, never fatal to the run
        return Sample(False, error=f"{type(e).__name__}: {e}"[:200])
    end = time.perf_counter()
    return Sample(True, usage if usage is not None else deltas, usage is not None, (first or end) - t0, end - t0)


@dataclass
class Level:
    server: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0  # seconds from the first request sent to the last answer, summed over rounds
    loads: list[float] = field(default_factory=list)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.ok)

    @property
    def tps(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


async def run_level(server: Server, concurrency: int, n_requests: int, max_tokens: int, timeout: float
                    ) -> tuple[list[Sample], float]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits) as client:
        async def gated(i: int) -> Sample:
            async with gate:
                return await one_request(client, server, PROMPTS[i % len(PROMPTS)], max_tokens)

        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(gated(i)) for i in range(n_requests)]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - t0
        late = Sample(False, error=f"level timed out after {timeout:.0f} s")
        return [t.result() if t in done else late for t in tasks], wall


def requests_at(concurrency: int, args) -> int:
    return args.requests or (max(4, concurrency) if args.quick else max(8, 2 * concurrency))


def measure(servers: list[Server], levels: list[int], args) -> dict[tuple[str, int], Level]:
    table = {(s.name, c): Level(s.name, c) for s in servers for c in levels}
    for r in range(args.rounds):
        for c in levels:
            n = requests_at(c, args)
            # rotate who goes first, so that no server always follows the same one
            shift = (r + levels.index(c)) % len(servers)
            for server in servers[shift:] + servers[:shift]:
                others = [s for s in servers if s is not server]
                before = [cpu_seconds(s) for s in others]
                samples, wall = asyncio.run(run_level(server, c, n, args.max_tokens, args.level_timeout))
                for s, b in zip(others, before):
                    s.idle_cpu += cpu_seconds(s) - b
                level = table[(server.name, c)]
                level.samples += samples
                level.wall += wall
                level.loads.append(os.getloadavg()[0])
                failed = [s for s in samples if not s.ok]
                print(f"  round {r + 1}, {server.name:16} c={c:<3} {len(samples) - len(failed)}/{len(samples)} ok, "
                      f"{sum(s.tokens for s in samples if s.ok)} tokens in {wall:.1f} s, load {level.loads[-1]:.2f}"
                      + (f"; first failure: {failed[0].error}" if failed else ""), file=sys.stderr, flush=True)
    return table


# ---- reporting ----------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def results_table(table: dict[tuple[str, int], Level], servers: list[Server], levels: list[int]) -> list[str]:
    lines = ["| server | concurrency | requests (failed) | generated tokens | aggregate tok/s | TTFT p50 s | "
             "TTFT p99 s | latency p50 s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in levels:
        for s in servers:
            lv = table[(s.name, c)]
            ok = lv.ok
            approx = "≈" if any(not x.from_usage for x in ok) else ""
            ttft = [x.ttft for x in ok]
            lines.append(f"| {s.name} | {c} | {len(lv.samples)} ({len(lv.samples) - len(ok)}) | {approx}{lv.tokens} | "
                         f"{lv.tps:.1f} | {percentile(ttft, 0.5):.3f} | {percentile(ttft, 0.99):.3f} | "
                         f"{percentile([x.latency for x in ok], 0.5):.3f} |")
    return lines


def ratio_lines(table: dict[tuple[str, int], Level], names: set[str], levels: list[int]) -> list[str]:
    def ratio(a: str, b: str, c: int) -> float | None:
        if a in names and b in names and table[(b, c)].tps:
            return table[(a, c)].tps / table[(b, c)].tps
        return None

    lines = ["| comparison | concurrency | ratio | target | |", "|---|---:|---:|---:|:---:|"]
    rows = [("quantkit / llama-server", c, ratio("quantkit", "llama-server", c), 1.0) for c in levels]
    rows += [("quantkit / llama_cpp.server", c, ratio("quantkit", "llama_cpp.server", c), 3.0 if c == 8 else None)
             for c in levels]
    rows += [("quantkit / example", c, ratio("quantkit", "example", c), None) for c in levels]
    rows += [("llama-server / llama_cpp.server", c, ratio("llama-server", "llama_cpp.server", c), None)
             for c in levels]
    for what, c, r, target in rows:
        if r is None:
            continue
        met = "" if target is None else ("✓" if r >= target else "✗")
        lines.append(f"| {what} (aggregate tok/s) | {c} | {r:.3f} | {'' if target is None else f'≥ {target:g}'} "
                     f"| {met} |")
    return lines


def machine() -> str:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kib / 2**20:.0f} GiB"
    return f"{cpu}, {os.cpu_count()} logical CPUs{memory}; {platform.system()} {platform.release()}"


def markdown(args, model: Path, servers: list[Server], skipped: dict[str, str], table, levels, when: str,
             loads: dict[str, tuple[float, float, float]]) -> str:
    measured = [x for lv in table.values() for x in lv.loads]
    lines = [
        "# `quantkit serve` against llama-server and llama-cpp-python's servers", "",
        f"Recorded {when} with `python benchmarks/serve.py {' '.join(sys.argv[1:])}` on {machine()}.", "",
        f"- model: {model.name}; {args.threads} thread(s) for every server; total context {args.ctx} cells "
        f"({args.parallel} slots where the server batches, one sequence for llama_cpp.server); ggml extra buffers "
        f"(repack, AMX) {'on' if args.extra_buffers else 'off on every server (AMX CPU)'}",
        f"- each request: a streaming chat completion of one of {len(PROMPTS)} fixed prompts, temperature 0, seed "
        f"{SEED}, max_tokens {args.max_tokens}; at concurrency C, "
        f"{', '.join(str(requests_at(c, args)) for c in levels)} requests at C = {', '.join(map(str, levels))}, with C "
        f"in flight; {args.rounds} round(s), servers taking "
        f"turns at each level; tokens/s = generated tokens (each server's `usage`) / wall time of the level",
        f"- machine load (1-minute average): {loads['before'][0]:.2f} before, "
        f"{min(measured, default=0):.2f}–{max(measured, default=0):.2f} during "
        f"(mean {statistics.fmean(measured) if measured else 0:.2f}), {loads['after'][0]:.2f} after; "
        f"{os.cpu_count()} logical CPUs shared with other jobs",
        "", "## Results", "", *results_table(table, servers, levels), "", "## Ratios", "",
        *ratio_lines(table, {s.name for s in servers}, levels), "", "## Servers", "",
    ]
    for s in servers:
        lines.append(f"- **{s.name}**: {s.version}; `{s.settings}`; idle CPU while others were measured: "
                     f"{s.idle_cpu:.1f} s" + (f"; {s.count_check}" if s.count_check else ""))
    for name, why in skipped.items():
        lines.append(f"- **{name}**: not measured — {why}")
    return "\n".join(lines) + "\n"


def start_ready(name: str, make, args, model: Path, scratch: Path, servers: list[Server]) -> str | None:
    """Start server `name`, wait until it answers and warm it up; None when it serves, else why not. It joins
    `servers` as soon as it runs, so that the caller stops it whatever happens next."""
    port = free_port()
    server = make(args, model, port, scratch) if name == "example" else make(args, model, port)
    print(f"starting {name} on port {port}: {' '.join(server.command)}", file=sys.stderr, flush=True)
    start(server, scratch)
    servers.append(server)
    try:
        wait_ready(server, args.start_timeout)
        warm = asyncio.run(run_level(server, 1, 1, 16, args.level_timeout))[0][0]
        if not warm.ok:
            raise RuntimeError(f"warm-up request failed: {warm.error}\n{tail(server.log)}")
        if not warm.from_usage:
            server.count_check = check_delta_count(server, warm)
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        stop(server)
        servers.remove(server)
        return f"did not serve here: {str(e).splitlines()[0]} (log: {server.log})"
    return None


def check_delta_count(server: Server, streamed: Sample) -> str:
    """A server that sends no usage when streaming is counted by its deltas: compare them, on the warm-up prompt,
    with the usage of the same request not streamed."""
    import httpx

    body = {"model": server.model_id, "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 16,
            "temperature": 0, "seed": SEED}
    try:
        answer = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120).json()
        tokens = answer["usage"]["completion_tokens"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
        return f"no usage in its stream; deltas counted as tokens, unchecked ({type(e).__name__})"
    return (f"no usage in its stream; deltas counted as tokens ({streamed.tokens} deltas where its non-streamed "
            f"usage says {tokens} tokens for the same request)")


def interrupted(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


# ---- main ---------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path, help="a .gguf file (default: the embedded SmolLM2)")
    ap.add_argument("--concurrency", default="1,4,8,16", help="comma-separated concurrency levels")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--requests", type=int, help="requests per level (default: max(8, 2 × concurrency))")
    ap.add_argument("--threads", type=int, help="default: all physical cores")
    ap.add_argument("--ctx", type=int, default=4096, help="total context of each server")
    ap.add_argument("--parallel", type=int, help="slots of the batching servers (default: the highest concurrency)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--servers", default="llama-server,llama_cpp.server,example,quantkit")
    ap.add_argument("--out", help="Markdown results (default: benchmarks/serve_results.md; none with --quick); "
                                   "'-': none")
    ap.add_argument("--quick", action="store_true", help="concurrency 1,4; 32 tokens; max(4, C) requests")
    ap.add_argument("--start-timeout", type=float, default=300.0)
    ap.add_argument("--level-timeout", type=float, default=900.0, help="seconds one server may take for one level")
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    if args.build_only:
        print(build_tool("llama-server"))
        return
    if args.quick:
        args.concurrency = "1,4" if args.concurrency == ap.get_default("concurrency") else args.concurrency
        args.max_tokens = 32 if args.max_tokens == ap.get_default("max_tokens") else args.max_tokens
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    out = (None if args.out == "-" else Path(args.out) if args.out
           else None if args.quick else ROOT / "benchmarks" / "serve_results.md")
    if importlib.util.find_spec("httpx") is None:
        sys.exit("benchmarks/serve.py needs httpx: pip install httpx")

    from quantkit import runtime
    from quantkit.convert.embedded import embedded_gguf

    model = (args.model or embedded_gguf()).resolve()
    args.threads = args.threads or runtime.physical_cores()
    args.parallel = args.parallel or max(levels)
    # the same switch everywhere: quantkit turns ggml's extra buffers off on AMX CPUs (its AMX path crashes there)
    args.extra_buffers = runtime.extra_buffers_default()

    makers = {"llama-server": llama_server, "llama_cpp.server": llama_cpp_server, "example": example_server,
              "quantkit": quantkit_server}
    wanted = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in makers]
    if unknown:
        ap.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(makers)}")

    # Ctrl-C, SIGTERM and SIGHUP all end in the `finally` that stops every server
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    servers: list[Server] = []
    skipped: dict[str, str] = {}
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    loads = {"before": os.getloadavg()}
    scratch = BENCH_CACHE / "serve-logs"  # each server's log of the last run, kept for a look after
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        for name in wanted:
            if why := missing_modules(name) or start_ready(name, makers[name], args, model, scratch, servers):
                skipped[name] = why
                print(f"skipping {name}: {why}", file=sys.stderr)
        if not servers:
            sys.exit("no server could be started")
        table = measure(servers, levels, args)
    except KeyboardInterrupt as e:
        sys.exit(f"interrupted ({e or 'SIGINT'}): every server stopped, nothing written")
    finally:
        for s in servers:
            stop(s)
        for s in servers:
            if s.proc and s.proc.poll() is None:
                print(f"warning: {s.name} (pid {s.proc.pid}) did not stop", file=sys.stderr)
    loads["after"] = os.getloadavg()
    text = markdown(args, model, servers, skipped, table, levels, when, loads)
    print(text)
    if out:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
