"""The OpenAI-compatible HTTP skin over the engine, wired: the engine's lifetime (loaded on a thread once the socket
is up, so `/health` answers 503 while the model loads; drained on shutdown), the error handlers (errors.py), the
request counter and the routes (routes.py, answering through streaming.py).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ..engine import Engine, Stream
from ..engine.thinking import Thinking, check_budget
from ..errors import ChatTemplateError, InvalidArgumentError
from .errors import APIError, install_error_handlers, unavailable
from .metrics import Metrics
from .responses import add_responses_route
from .routes import add_routes

log = logging.getLogger(__name__)

__all__ = ["REASONING_FORMATS", "APIError", "Backend", "ServeConfig", "create_app"]

REASONING_FORMATS = ("deepseek", "none")
EFFORTS = ("low", "medium", "high")  # OpenAI's reasoning_effort names, mapped to budgets by --reasoning-effort-budgets
DEFAULT_EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}


def effort_budgets(text: str) -> dict[str, int]:
    """`--reasoning-effort-budgets 1024,4096,16384`: the budgets of low, medium and high."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(EFFORTS) or not all(p.lstrip("-").isdigit() for p in parts):
        raise InvalidArgumentError(f"--reasoning-effort-budgets takes {len(EFFORTS)} token counts for "
                                   f"{', '.join(EFFORTS)} (e.g. 1024,4096,16384), not {text!r}")
    budgets = dict(zip(EFFORTS, map(int, parts)))
    for budget in budgets.values():
        check_budget(budget, "--reasoning-effort-budgets")
    return budgets


@dataclass
class ServeConfig:
    model_id: str
    api_key: str | None = None
    reasoning_format: str = "deepseek"  # "deepseek": the thought in reasoning_content; "none": tags in content
    max_body_bytes: int = 8 * 2**20
    shutdown_grace: float = 3.0  # seconds in-flight requests may finish after SIGINT/SIGTERM before they are cancelled
    created: int = field(default_factory=lambda: int(time.time()))
    replica: str | None = None  # one of several replicas (Ray Serve): named in a header and in /metrics
    thinking: Thinking = field(default_factory=lambda: Thinking(loop_guard="end"))  # the default of every request
    effort_budgets: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EFFORT_BUDGETS))
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (CORS); none by default
    model_marks: dict | None = None  # /v1/models' quantkit field: file type, budget mix, imatrix (quantize/marks.py)
    load_in_background: bool = True  # False: the app starts only once the model is loaded (a replica is not


class Backend:
    """The engine behind the app and its lifetime: loaded on a thread, drained on shutdown."""

    def __init__(self, config: ServeConfig, load: Callable[[], Engine]):
        self.config = config
        self._load = load
        self.engine: Engine | None = None
        self.template = None
        self.template_error: str | None = None
        self.load_error: BaseException | None = None
        self.shutting_down = False
        self.on_loaded: Callable[[Engine], None] | None = None
        self.on_load_failed: Callable[[BaseException], None] | None = None
        self.streams: set[Stream] = set()  # in flight, to cancel when the grace runs out
        self._thread: threading.Thread | None = None

    def start_loading(self) -> None:
        self._thread = threading.Thread(target=self._load_engine, name="quantkit-load", daemon=True)
        self._thread.start()

    def load_now(self) -> None:
        self._load_engine()
        if self.load_error is not None:
            raise self.load_error

    def _load_engine(self) -> None:
        try:
            engine = self._load()
        except BaseException as e:
            self.load_error = e
            log.error("loading the model failed: %s", e)
            if self.on_load_failed is not None:
                self.on_load_failed(e)
            return
        try:
            self.template = engine.template
        except ChatTemplateError as e:  # raw completions still work
            self.template_error = str(e)
        self.engine = engine
        if self.on_loaded is not None:
            self.on_loaded(engine)

    def ready(self) -> Engine:
        if self.shutting_down:
            raise unavailable("the server is shutting down")
        if self.engine is None:
            raise unavailable("Loading model")
        return self.engine

    def begin_shutdown(self) -> None:
        """SIGINT/SIGTERM: take no new requests, let those in flight finish for a grace, then cancel them."""
        if self.shutting_down:
            return
        self.shutting_down = True
        threading.Thread(target=self._drain, name="quantkit-drain", daemon=True).start()

    def _drain(self) -> None:
        engine = self.engine
        if engine is not None and not engine.drain(self.config.shutdown_grace):
            log.warning("cancelling %d requests still in flight", len(self.streams))
            for stream in list(self.streams):
                stream.cancel()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def add_cors(app: FastAPI, origins: tuple[str, ...]) -> None:
    """Let browsers at `origins` call the API (CORS); none by default."""
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])


def create_app(config: ServeConfig, load: Callable[[], Engine]) -> FastAPI:
    if config.reasoning_format not in REASONING_FORMATS:
        raise InvalidArgumentError(f"--reasoning-format must be one of {', '.join(REASONING_FORMATS)}, "
                                   f"not {config.reasoning_format!r}")
    backend = Backend(config, load)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.load_in_background:
            backend.start_loading()
        else:
            await run_in_threadpool(backend.load_now)
        yield
        backend.shutting_down = True
        await run_in_threadpool(backend.close)

    app = FastAPI(title="quantkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.state.metrics = metrics

    install_error_handlers(app)
    app.add_middleware(_CountRequests, metrics=metrics, replica=config.replica)

    add_cors(app, config.cors_origins)
    add_routes(app, config, backend, metrics)
    add_responses_route(app, config, backend)
    return app


class _CountRequests:
    """Counts every answer by path and status (a pure ASGI middleware: it leaves streaming and disconnects be)."""

    def __init__(self, app, metrics: Metrics, replica: str | None = None):
        self.app, self.metrics = app, metrics
        self.header = [(b"x-quantkit-replica", replica.encode())] if replica else []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # what the client gets if the app raises

        async def send_counted(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *self.header]}
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.observe(scope["path"], status)
