"""`quantkit serve MODEL.gguf`: an OpenAI-compatible server (chat with the reasoning apart, raw completions,
models, health, metrics) over the batching engine, and a web page at `/`. `quantkit serve A.gguf B.gguf FOLDER/`:
one server for all of them, each loaded when a request names it (serve/router.py). FastAPI and uvicorn are
imported when the command runs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InvalidArgumentError
from ..memory.layers import remote_summary
from ..engine.thinking import BUDGET_MESSAGE
from ._options import LoopGuard, LoopGuardMode, NGpuLayers, ReasoningBudget, ReasoningBudgetMessage, Rpc
from ._options import Draft, DraftMax, DraftMin, DraftPMin, Spec, SpecNgram, Threads
from ._listen import listen, run_until_stopped, warn_if_open
from ._output import command, stderr
from ._rpc import exit_on_ggml_abort, rpc_endpoints
from ._spec import speculation_of


def register(app: typer.Typer) -> None:
    app.command("serve")(run)


@command
def run(
    models: Annotated[list[Path], typer.Argument(help="GGUF files, or folders holding them (a `quantkit run` output): "
                                                  "several are served by one router.", show_default=False)],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")] = 8080,
    parallel: Annotated[int, typer.Option("--parallel", "-np", min=1, help="Sequences generated at once (slots).")] = 4,
    ctx: Annotated[int, typer.Option("--ctx", "-c", min=2, help="KV cache in tokens, shared by the slots: one request may use all of it.")] = 16384,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="QUANTKIT_API_KEY", show_envvar=True,
                                                   help="Bearer token the clients must send.")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option("--api-key-file", help="Read the API key from this file.")] = None,
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, help="Most tokens in one decode (prompt chunks of waiting requests fill it).")] = 2048,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Requests that may wait for a slot; past it: 503 with Retry-After.")] = 128,
    reasoning_format: Annotated[str, typer.Option("--reasoning-format", help="deepseek: the thought in reasoning_content; none: <think> tags left in content.")] = "deepseek",
    alias: Annotated[Optional[str], typer.Option("--alias", help="Model id in /v1/models and responses (default: the file name).")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="A browser origin allowed to "
                                                  "call the API (CORS; repeatable, '*' for any). Off by default.")] = None,
    max_body_mib: Annotated[float, typer.Option("--max-body-mib", min=0.001, help="Largest request body; past it: 413.")] = 8.0,
    shutdown_grace: Annotated[float, typer.Option("--shutdown-grace", min=0, help="Seconds in-flight requests may finish after SIGINT/SIGTERM.")] = 3.0,
    reasoning_budget: ReasoningBudget = None,
    reasoning_budget_message: ReasoningBudgetMessage = BUDGET_MESSAGE,
    reasoning_effort_budgets: Annotated[str, typer.Option("--reasoning-effort-budgets", help="The budgets a "
                                        "request's reasoning_effort low,medium,high stands for.")] = "1024,4096,16384",
    loop_guard: LoopGuard = LoopGuardMode.end,
    threads: Threads = None,
    n_gpu_layers: NGpuLayers = "auto",
    rpc: Rpc = None,
    spec: Spec = None,
    draft: Draft = None,
    draft_max: DraftMax = 8,
    draft_min: DraftMin = 0,
    draft_p_min: DraftPMin = 0.75,
    spec_ngram: SpecNgram = 4,
    ray: Annotated[Optional[str], typer.Option("--ray", help="Run replicas on Ray Serve: 'local' starts a Ray "
                                                            "cluster here, else the address of one (auto, HOST:PORT).")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="With --ray: replicas of the model (one GPU "
                                                                     "each, or --threads CPUs each).")] = 1,
    max_loaded: Annotated[int, typer.Option("--max-loaded", min=0, help="With several models: most loaded at once "
                                                                       "(0: no limit but memory).")] = 0,
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", help="With several models: the memory the "
                          "loaded ones may take, by estimate-memory's count (e.g. 12GiB; default: the free RAM and "
                          "VRAM at start).", show_default=False)] = None,
    no_webui: Annotated[bool, typer.Option("--no-webui", help="No web page at /.")] = False,
) -> None:
    """Serve GGUF models over an OpenAI-compatible HTTP API and a web page, several requests at once."""
    endpoints = rpc_endpoints(rpc)
    speculating = speculation_of(spec, draft, draft_max, draft_min, draft_p_min, spec_ngram)
    if len(models) != 1 or models[0].is_dir():
        if ray is not None:
            raise InvalidArgumentError("--ray serves one model, not several")
        from ._serve_router import serve_router

        return serve_router(models, host=host, port=port, api_key=_api_key(api_key, api_key_file),
                            max_loaded=max_loaded, max_memory=max_memory, webui=not no_webui,
                            reasoning_format=reasoning_format, max_body_mib=max_body_mib,
                            shutdown_grace=shutdown_grace, budgets=reasoning_effort_budgets,
                            thinking=(reasoning_budget, reasoning_budget_message, loop_guard.value),
                            engine={"n_ctx": ctx, "n_gpu_layers": n_gpu_layers, "n_parallel": parallel,
                                    "threads": threads, "n_batch": batch, "max_queue": max_queue, "rpc": endpoints,
                                    "speculation": speculating},
                            cors_origins=tuple(cors_origin or ()))
    model = models[0]
    from ..gguf.reader import read_header
    from ..quantize.marks import file_marks

    header = read_header(model)  # a missing or non-GGUF file fails before the socket opens
    key = _api_key(api_key, api_key_file)

    from ..engine import Engine
    from ..engine.thinking import Thinking
    from ..serve import ServeConfig, create_app
    from ..serve.app import effort_budgets

    thinking = Thinking(reasoning_budget, reasoning_budget_message, loop_guard.value)
    config = ServeConfig(model_id=alias or model.name, api_key=key, reasoning_format=reasoning_format.lower(),
                         max_body_bytes=int(max_body_mib * 2**20), shutdown_grace=shutdown_grace,
                         created=int(model.stat().st_mtime), thinking=thinking,
                         effort_budgets=effort_budgets(reasoning_effort_budgets), model_marks=file_marks(header),
                         cors_origins=tuple(cors_origin or ()))

    def load() -> Engine:  # in this process, or in each Ray replica's (which registers the servers in its own)
        if endpoints:
            exit_on_ggml_abort()  # in a replica's process too
        return Engine.open(model, n_ctx=ctx, n_gpu_layers=n_gpu_layers, n_parallel=parallel, threads=threads,
                           n_batch=batch, max_queue=max_queue, rpc=endpoints, speculation=speculating)

    if ray is not None:
        return _serve_on_ray(config, load, ray, replicas, host, port, threads, key)
    app = create_app(config, load)
    app.state.backend.on_loaded = lambda engine: _loaded(engine, thinking.budget is not None)
    if not no_webui:
        from ..serve.webui import add_webui

        add_webui(app, api_key=key is not None)
    sock, url = listen(host, port, key)
    stderr.print(f"quantkit serve: {url} · model {config.model_id} · loading…", highlight=False)
    run_until_stopped(app, sock)


def _serve_on_ray(config, load, address: str, replicas: int, host: str, port: int, threads: int | None,
                  key: str | None) -> None:
    from ..serve.replicas import check_can_deploy, deploy, serve_forever

    check_can_deploy(port)
    address = None if address.lower() == "local" else address
    warn_if_open(host, key)
    stderr.print(f"quantkit serve: starting {replicas} Ray Serve replicas of {config.model_id}…", highlight=False)
    deploy(config, load, replicas=replicas, host=host, port=port, threads=threads, address=address)
    stderr.print(f"ready: http://{host}:{port}/v1 · {replicas} replicas on Ray Serve", highlight=False)
    serve_forever(address)
    stderr.print("quantkit serve: stopped", style="dim", highlight=False)


def _api_key(api_key: str | None, api_key_file: Path | None) -> str | None:
    if api_key_file is not None:
        if api_key and "QUANTKIT_API_KEY" not in os.environ:
            raise InvalidArgumentError("pass --api-key or --api-key-file, not both")
        lines = api_key_file.read_text().splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise InvalidArgumentError(f"{api_key_file} holds no API key", hint="write the key on its first line")
        return key
    if api_key is not None and not api_key.strip():
        raise InvalidArgumentError("the API key is empty")
    return api_key.strip() if api_key else None


def _loaded(engine, budget: bool = False) -> None:
    from ..errors import ChatTemplateError
    from ..runtime import describe_device

    m = engine.model
    try:
        thinks = engine.template.knows_think
    except ChatTemplateError:
        thinks = False
    if budget and not thinks:
        stderr.print(f"warning: --reasoning-budget has no effect: {m.path.name}'s chat template has no <think>",
                     style="yellow", highlight=False)
    where = remote_summary(m.layer_devices) or f"{m.layers_on_gpu}/{m.n_layer + 1} layers on GPU"
    stderr.print(f"ready: {describe_device(engine.context.threads)} · {where} · {engine.n_parallel} slots sharing "
                 f"{engine.n_ctx} tokens of KV cache", style="dim", highlight=False)
