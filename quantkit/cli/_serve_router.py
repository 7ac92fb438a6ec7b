"""`quantkit serve A.gguf B.gguf FOLDER/`: the models found, their memory counted, the router's app run."""
from __future__ import annotations

from pathlib import Path

from ..errors import InvalidArgumentError
from ._listen import listen, run_until_stopped
from ._output import stderr


def serve_router(paths: list[Path], *, host: str, port: int, api_key: str | None, max_loaded: int,
                 max_memory: str | None, webui: bool, reasoning_format: str, max_body_mib: float,
                 shutdown_grace: float, budgets: str, thinking: tuple, engine: dict,
                 cors_origins: tuple[str, ...] = ()) -> None:
    from ..engine import Engine
    from ..engine.thinking import Thinking
    from ..quant_types import parse_size
    from ..serve import ServeConfig, create_app
    from ..serve.app import REASONING_FORMATS, effort_budgets
    from ..serve.catalog import find_models
    from ..serve.router import (
        RoutedModel,
        Router,
        RouterConfig,
        available_memory,
        create_router_app,
        memory_need,
    )

    if reasoning_format.lower() not in REASONING_FORMATS:
        raise InvalidArgumentError(f"--reasoning-format must be one of {', '.join(REASONING_FORMATS)}, "
                                   f"not {reasoning_format!r}")
    budget = parse_size(max_memory, "--max-memory") if max_memory is not None else None
    found = find_models(paths)  # every header read and checked before the socket opens
    base = ServeConfig(model_id="router", api_key=api_key, reasoning_format=reasoning_format.lower(),
                       max_body_bytes=int(max_body_mib * 2**20), shutdown_grace=shutdown_grace,
                       thinking=Thinking(*thinking), effort_budgets=effort_budgets(budgets), load_in_background=False,
                       cors_origins=cors_origins)
    budget = available_memory() if budget is None else budget
    need = {m.id: memory_need(m, engine["n_ctx"], engine["n_batch"], engine["n_parallel"]) for m in found}

    def open_app(model):
        import dataclasses

        config = dataclasses.replace(base, model_id=model.id, created=int(model.path.stat().st_mtime), cors_origins=())
        return create_app(config, lambda: Engine.open(model.path, **engine))

    router = Router([RoutedModel(m, need[m.id]) for m in found],
                    RouterConfig(max_loaded=max_loaded, max_memory=budget, serve=base), open_app)
    app = create_router_app(router)
    if webui:
        from ..serve.webui import add_webui

        add_webui(app, api_key=api_key is not None)
    sock, url = listen(host, port, api_key)
    limit = f"at most {max_loaded} loaded, " if max_loaded else ""
    stderr.print(f"quantkit serve: {url} · {len(found)} models ({limit}"
                 f"{budget / 2**30:.1f} GiB for them), each loaded when first asked for", highlight=False)
    for m in found:
        stderr.print(f"  {m.id}  {m.type or '?'}  {m.size_bytes / 2**20:.0f} MiB  needs "
                     f"{need[m.id] / 2**20:.0f} MiB", style="dim", highlight=False)
    run_until_stopped(app, sock)
