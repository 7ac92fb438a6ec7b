"""Many models behind one server (`quantkit serve A.gguf B.gguf FOLDER/`): each model gets its own engine and its
own app (create_app, unchanged) when a request first names it, and loses them, least recently used first, when
another one needs the room (`max_loaded` models, `max_memory` bytes by estimate-memory's count); never while a
request runs on it. Requests for a model being loaded wait for it. `/models/load` and `/models/unload` do by hand
what requests do on their own, as llama-server's router names them.

All the bookkeeping runs on the event loop under one condition; loading and closing run on threads, in tasks
of their own, so that a client that goes away mid-load leaves no half-loaded engine behind.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from .app import ServeConfig, _CountRequests, add_cors
from .catalog import ModelFile
from .errors import APIError, install_error_handlers, unavailable
from .metrics import Family, Metrics, render_families
from .routes import _read_body

log = logging.getLogger(__name__)

UNLOADED, LOADING, LOADED, UNLOADING, FAILED = "unloaded", "loading", "loaded", "unloading", "failed"
GENERATING = ("/v1/chat/completions", "/v1/completions", "/v1/responses")


@dataclass
class RoutedModel:
    """One model of the router and where it stands."""

    model: ModelFile
    need_bytes: int  # weights + KV cache + compute buffers, as estimate-memory counts them
    state: str = UNLOADED
    app: FastAPI | None = None  # the model's own app (its engine, metrics, routes) while loaded
    error: str | None = None  # why its last load failed
    attempts: int = 0  # loads tried
    load_seconds: float | None = None
    loads: int = 0
    unloads: int = 0
    active: int = 0  # requests running on it (or waiting for its load)
    last_used: float = 0.0

    @property
    def id(self) -> str:
        return self.model.id

    def describe(self, created: int) -> dict:
        status = {"value": self.state, "load_seconds": self.load_seconds, "active_requests": self.active}
        if self.error is not None and self.state == FAILED:
            status["error"] = self.error
        return {"id": self.id, "object": "model", "created": created, "owned_by": "quantkit",
                "status": status, "memory_bytes": self.need_bytes, **self.model.describe()}


@dataclass
class RouterConfig:
    max_loaded: int = 0  # 0: no limit on the count
    max_memory: int = 0  # bytes; 0: no limit on memory
    serve: ServeConfig = field(default_factory=lambda: ServeConfig(model_id="router"))


class Router:
    """The models and the rule of which stay loaded. `open_app(model)` makes a model's app (not yet loaded)."""

    def __init__(self, models: list[RoutedModel], config: RouterConfig, open_app: Callable[[ModelFile], FastAPI]):
        self.models = {m.id: m for m in models}
        self.config = config
        self._open_app = open_app
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()
        self.shutting_down = False

    # -- what requests call ---------------------------------------------------------------------------------

    def find(self, model_id: str | None) -> RoutedModel:
        if model_id is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise APIError(400, f"model: required, one of {', '.join(self.models)}", param="model")
        if model_id not in self.models:
            raise APIError(404, f"the model {model_id!r} does not exist (GET /v1/models lists them)",
                           "invalid_request_error", param="model", code="model_not_found")
        return self.models[model_id]

    async def acquire(self, entry: RoutedModel) -> bool:
        """Hold `entry` loaded for one request (release it after); True when this call waited for its load."""
        entry.active += 1
        try:
            return await self._ensure_loaded(entry)
        except BaseException:
            await self.release(entry)
            raise

    async def release(self, entry: RoutedModel) -> None:
        entry.active -= 1
        entry.last_used = time.monotonic()
        async with self._changed:
            self._changed.notify_all()

    async def unload(self, entry: RoutedModel) -> None:
        async with self._changed:
            if entry.state in (UNLOADED, FAILED):
                return
            if entry.state != LOADED:
                raise APIError(409, f"the model {entry.id!r} is {entry.state}; try again when it is loaded",
                               "conflict_error")
            if entry.active:
                raise APIError(409, f"the model {entry.id!r} has {entry.active} requests running; it is unloaded "
                                    "only when idle", "conflict_error")
            entry.state = UNLOADING
        await self._close(entry)
        async with self._changed:
            self._changed.notify_all()

    # -- loading and unloading ------------------------------------------------------------------------------

    async def _ensure_loaded(self, entry: RoutedModel) -> bool:
        waited = False
        async with self._changed:
            seen = entry.attempts
            while True:
                if self.shutting_down:
                    raise unavailable("the server is shutting down")
                if entry.state == LOADED:
                    return waited
                if entry.state == FAILED and entry.attempts > seen:
                    raise _load_failed(entry)
                if entry.state in (UNLOADED, FAILED):
                    self._check_fits_alone(entry)
                    victims = self._victims(entry)
                    if victims is not None:
                        seen = entry.attempts
                        entry.state = LOADING
                        for v in victims:
                            v.state = UNLOADING
                        task = asyncio.create_task(self._swap(victims, entry))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                waited = True
                await self._changed.wait()

    def _check_fits_alone(self, entry: RoutedModel) -> None:
        budget = self.config.max_memory
        if budget and entry.need_bytes > budget:
            raise unavailable(f"the model {entry.id!r} needs {_gib(entry.need_bytes)} GiB, more than the server's "
                              f"--max-memory of {_gib(budget)} GiB")

    def _victims(self, entry: RoutedModel) -> list[RoutedModel] | None:
        """The idle models to unload, least recently used first, so that `entry` fits; None if it cannot fit now
        (the others are busy or on their way in or out: wait)."""
        held = [m for m in self.models.values() if m.state in (LOADED, LOADING, UNLOADING) and m is not entry]
        count, memory = len(held) + 1, sum(m.need_bytes for m in held) + entry.need_bytes
        idle = sorted((m for m in held if m.state == LOADED and m.active == 0), key=lambda m: m.last_used)
        victims = []
        while self._over(count, memory) and idle:
            victim = idle.pop(0)
            victims.append(victim)
            count, memory = count - 1, memory - victim.need_bytes
        return None if self._over(count, memory) else victims

    def _over(self, count: int, memory: int) -> bool:
        c = self.config
        return bool(c.max_loaded and count > c.max_loaded) or bool(c.max_memory and memory > c.max_memory)

    async def _swap(self, victims: list[RoutedModel], entry: RoutedModel) -> None:
        try:
            for victim in victims:
                await self._close(victim)
            await self._open(entry)
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _open(self, entry: RoutedModel) -> None:
        log.info("loading %s", entry.id)
        start = time.monotonic()
        app = None
        try:
            app = self._open_app(entry.model)
            await run_in_threadpool(app.state.backend.load_now)
        except Exception as e:  # noqa: BLE001 - any load failure is this model's, reported to its requests
            log.error("loading %s failed: %s", entry.id, e)
            entry.state, entry.error = FAILED, str(e) or type(e).__name__
            entry.attempts += 1
            if app is not None:
                await run_in_threadpool(app.state.backend.close)
            return
        entry.app, entry.state, entry.error = app, LOADED, None
        entry.attempts += 1
        entry.loads += 1
        entry.load_seconds = round(time.monotonic() - start, 3)
        entry.last_used = time.monotonic()
        log.info("loaded %s in %.2f s", entry.id, entry.load_seconds)

    async def _close(self, entry: RoutedModel) -> None:
        app, entry.app = entry.app, None
        if app is not None:
            await run_in_threadpool(app.state.backend.close)
        entry.state = UNLOADED
        entry.unloads += 1
        log.info("unloaded %s", entry.id)

    # -- the server's lifetime ------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        for entry in self.models.values():
            if entry.app is not None:
                entry.app.state.backend.begin_shutdown()

    async def close(self) -> None:
        self.shutting_down = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for entry in self.models.values():
            if entry.app is not None:
                await self._close(entry)

    # -- metrics --------------------------------------------------------------------------------------------

    def families(self, base: list[Family]) -> list[Family]:
        """`base` (the router's request counts), the router's own metrics, then every loaded model's engine
        metrics labelled with its id (its request counts go into base's family of the same name)."""
        entries = list(self.models.values())

        def per_model(name, kind, help_, value) -> Family:
            return (name, kind, help_, [(f'{{model="{e.id}"}}', value(e)) for e in entries])

        c = self.config
        out: list[Family] = [
            ("models_loaded", "gauge", "Models loaded now.", [("", sum(e.state == LOADED for e in entries))]),
            ("models_max_loaded", "gauge", "--max-loaded (0: no limit).", [("", c.max_loaded)]),
            ("memory_budget_bytes", "gauge", "--max-memory in bytes (0: no limit).", [("", c.max_memory)]),
            ("memory_loaded_bytes", "gauge", "Estimated memory of the models loaded now.",
             [("", sum(e.need_bytes for e in entries if e.state == LOADED))]),
            per_model("model_loaded", "gauge", "1 while the model is loaded.", lambda e: e.state == LOADED),
            per_model("model_active_requests", "gauge", "Requests running on the model or waiting for its load.",
                      lambda e: e.active),
            per_model("model_loads_total", "counter", "Times the model was loaded.", lambda e: e.loads),
            per_model("model_unloads_total", "counter", "Times the model was unloaded.", lambda e: e.unloads),
            per_model("model_load_seconds", "gauge", "Seconds its last load took.", lambda e: e.load_seconds or 0),
            per_model("model_memory_bytes", "gauge", "Its estimated memory: weights, KV cache, buffers.",
                      lambda e: e.need_bytes)]
        merged: dict[str, Family] = {f[0]: (f[0], f[1], f[2], list(f[3])) for f in base + out}
        for e in entries:
            app = e.app
            if app is None or app.state.backend.engine is None:
                continue
            for name, kind, help_, samples in app.state.metrics.families(app.state.backend.engine.stats()):
                if name == "model_loaded":
                    continue
                family = merged.setdefault(name, (name, kind, help_, []))
                family[3].extend((_with_model(labels, e.id), value) for labels, value in samples)
        return list(merged.values())


def _with_model(labels: str, model_id: str) -> str:
    inner = labels[1:-1] if labels else ""
    return "{" + ",".join(filter(None, [f'model="{model_id}"', inner])) + "}"


def _load_failed(entry: RoutedModel) -> APIError:
    return APIError(500, f"the model {entry.id!r} failed to load: {entry.error}", "server_error", param="model")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


# ---- the app -----------------------------------------------------------------------------------------------


class _Lifetime:
    """What server.run expects of `app.state.backend`: the config, the shutdown, no load error of its own."""

    def __init__(self, router: Router, config: ServeConfig):
        self.router, self.config = router, config
        self.load_error = None
        self.on_load_failed = None

    def begin_shutdown(self) -> None:
        self.router.begin_shutdown()


def create_router_app(router: Router) -> FastAPI:
    """The router's app: the OpenAI routes dispatched to each model's own app by the body's `model`, and
    `/v1/models`, `/models/load`, `/models/unload`, `/health`, `/metrics` answered here."""
    config = router.config.serve
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await router.close()

    app = FastAPI(title="quantkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = _Lifetime(router, config)
    app.state.metrics = metrics
    app.state.router = router
    install_error_handlers(app)

    def authorize(request: Request) -> None:
        _authorize(config, request.headers.get("authorization", ""))

    @app.get("/health")
    async def health():
        if router.shutting_down:
            raise unavailable("the server is shutting down")
        return {"status": "ok"}

    @app.get("/v1/models")
    @app.get("/models")
    async def models():
        return {"object": "list", "data": [m.describe(config.created) for m in router.models.values()]}

    @app.post("/models/load")
    async def load(request: Request):
        authorize(request)
        entry = router.find(await _model_of(request))
        await router.acquire(entry)
        await router.release(entry)
        return {"success": True, "model": entry.describe(config.created)}

    @app.post("/models/unload")
    async def unload(request: Request):
        authorize(request)
        entry = router.find(await _model_of(request))
        await router.unload(entry)
        return {"success": True, "model": entry.describe(config.created)}

    @app.get("/metrics")
    async def metrics_text(request: Request):
        authorize(request)
        own = [f for f in metrics.families() if f[0] == "requests_total"]
        text = render_families(router.families(own))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    app.add_middleware(_Dispatch, router=router, config=config)
    app.add_middleware(_CountRequests, metrics=metrics)
    add_cors(app, config.cors_origins)  # here only: each model's own app answers without CORS headers of its own
    return app


def _authorize(config: ServeConfig, header: str) -> None:
    if config.api_key is None:
        return
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
        raise APIError(401, "Invalid API Key", "authentication_error", headers={"WWW-Authenticate": "Bearer"})


async def _model_of(request: Request) -> str | None:
    body = await request.body()
    try:
        data = json.loads(body or b"{}")
    except ValueError as e:
        raise APIError(400, f"the body is not valid JSON: {e}") from None
    model = data.get("model") if isinstance(data, dict) else None
    if model is not None and not isinstance(model, str):
        raise APIError(400, "model: must be a string", param="model")
    return model


class _Dispatch:
    """POST /v1/chat/completions, /v1/completions and /v1/responses: the body read once, its `model` found, loaded and held
    for the whole answer (streamed or not), the request replayed into that model's app."""

    def __init__(self, app, router: Router, config: ServeConfig):
        self.app, self.router, self.config = app, router, config

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATING:
            return await self.app(scope, receive, send)
        try:
            request = Request(scope, receive)
            _authorize(self.config, request.headers.get("authorization", ""))
            body = await _read_body(request, self.config.max_body_bytes)
            entry = self.router.find(await _model_of(_Replayed(scope, body)))
            start = time.monotonic()
            waited = await self.router.acquire(entry)
        except APIError as e:
            return await e.response()(scope, receive, send)
        headers = [(b"x-quantkit-model", entry.id.encode())]
        if waited and entry.load_seconds is not None:
            headers.append((b"x-quantkit-load-seconds", f"{time.monotonic() - start:.3f}".encode()))

        async def send_marked(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        try:
            await entry.app(scope, _replay(body, receive), send_marked)
        finally:
            await self.router.release(entry)


class _Replayed(Request):
    """A request whose body was read already."""

    def __init__(self, scope, body: bytes):
        super().__init__(scope)
        self._body = body


def _replay(body: bytes, receive):
    """A receive channel that gives `body` first, then the client's own messages (its disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def available_memory() -> int:
    """Free RAM (MemAvailable) plus the GPUs' free memory, in bytes: --max-memory's default."""
    free = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except OSError:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    from ..runtime import gpu_devices

    return free + sum(d.memory_free or 0 for d in gpu_devices() if d.kind == "gpu")


def memory_need(model: ModelFile, n_ctx: int, n_batch: int, n_parallel: int) -> int:
    """What `model` takes loaded with this KV cache: its file, KV cache and compute buffers (estimate-memory's
    model), the cache capped as Engine.open caps it (the training context per slot)."""
    from ..errors import QuantkitError
    from ..memory.buffers import runtime_memory
    from ..memory.shapes import resolve_target

    try:
        spec = resolve_target(model.gguf)
        ctx = min(n_ctx, spec.max_context * n_parallel) if spec.max_context else n_ctx
        rt = runtime_memory(spec, ctx, "f16", True, n_batch, min(512, n_batch))
    except (QuantkitError, ValueError, KeyError) as e:
        log.warning("cannot estimate the memory of %s (%s): counting its file only", model.id, e)
        return model.size_bytes
    return model.size_bytes + rt.kv_bytes + rt.compute_bytes + rt.output_bytes
