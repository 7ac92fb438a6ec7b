"""The OpenAI-compatible HTTP skin over the engine: routes, auth, errors in OpenAI's shape, SSE streaming.

`create_app(config, load)` makes the FastAPI app; `load()` (run on a thread once the socket is up) returns the
engine, so `/health` answers 503 while the model loads. Every error, ours or a bug's, is answered as
`{"error": {"message", "type", "code"}}`; a traceback goes to the log, never to the client.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..engine import Engine, EngineClosedError, QueueFullError, Sampling, Stream
from ..engine.prompt import Prompt, chat_prompt, raw_prompt
from ..errors import ChatTemplateError, ContextFullError, InvalidArgumentError
from .metrics import Metrics
from .schemas import ChatCompletionRequest, CompletionRequest

log = logging.getLogger(__name__)

REASONING_FORMATS = ("deepseek", "none")
FINISH = {"stop": "stop", "length": "length", "context": "length"}  # the engine's word → OpenAI's
PUBLIC = ("/health", "/v1/models")  # answered without the API key


@dataclass
class ServeConfig:
    model_id: str
    api_key: str | None = None
    reasoning_format: str = "deepseek"  # "deepseek": the thought in reasoning_content; "none": tags in content
    max_body_bytes: int = 8 * 2**20
    shutdown_grace: float = 3.0  # seconds in-flight requests may finish after SIGINT/SIGTERM before they are cancelled
    created: int = field(default_factory=lambda: int(time.time()))
    replica: str | None = None  # one of several replicas (Ray Serve): named in a header and in /metrics
    load_in_background: bool = True  # False: the app starts only once the model is loaded (a replica is not
    # routed to before its startup ends)


class APIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param
        self.headers, self.extra = headers, extra

    def body(self) -> dict:
        error = {"message": self.message, "type": self.type, "code": self.status, "param": self.param, **self.extra}
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _unavailable(message: str) -> APIError:
    return APIError(503, message, "unavailable_error", headers={"Retry-After": "1"})


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
            raise _unavailable("the server is shutting down")
        if self.engine is None:
            raise _unavailable("Loading model")
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

    # -- errors -----------------------------------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return e.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        message = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return APIError(e.status_code, message, kind).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return APIError(500, f"internal error: {type(e).__name__}", "server_error").response()

    app.add_middleware(_CountRequests, metrics=metrics, replica=config.replica)

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
            raise APIError(401, "Invalid API Key", "authentication_error", headers={"WWW-Authenticate": "Bearer"})

    # -- routes -----------------------------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        if backend.load_error is not None:
            raise APIError(500, f"the model failed to load: {backend.load_error}", "server_error")
        backend.ready()
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.model_id, "object": "model", "created": config.created,
                                            "owned_by": "quantkit"}]}

    @app.get("/metrics")
    async def metrics_text(request: Request):
        authorize(request)
        engine = backend.engine
        stats = engine.stats() if engine is not None else None
        llama = None
        if stats is not None and stats.busy_slots == 0 and stats.waiting == 0:
            llama = sum(engine.kv_cells_in_llama().values())
        return PlainTextResponse(metrics.render(stats, llama, config.replica), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = _parse(ChatCompletionRequest, await _read_body(request, config.max_body_bytes))
        engine = backend.ready()
        if backend.template is None:
            raise APIError(400, f"{backend.template_error}; use /v1/completions with a raw prompt")
        prompt = await run_in_threadpool(_chat_prompt, engine, body)
        split = config.reasoning_format == "deepseek"
        stream = _submit(backend, engine, body, prompt, split_reasoning=split)
        reply = _Reply("chatcmpl", config.model_id)
        if body.stream:
            return EventStream(_chat_events(stream, reply, body.include_usage, backend), stream, backend)
        result = await _wait(stream, request, backend)
        message = {"role": "assistant"}
        if split and result.reasoning:
            message["reasoning_content"] = result.reasoning
        message["content"] = result.answer if split else result.text
        return reply.body("chat.completion", [{"index": 0, "message": message, "logprobs": None,
                                               "finish_reason": FINISH[result.finish_reason]}], usage=_usage(result))

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        body = _parse(CompletionRequest, await _read_body(request, config.max_body_bytes))
        engine = backend.ready()
        prompt = await run_in_threadpool(_raw_prompt, engine, body.prompt)
        stream = _submit(backend, engine, body, prompt)
        reply = _Reply("cmpl", config.model_id)
        if body.stream:
            return EventStream(_completion_events(stream, reply, body.include_usage, backend), stream, backend)
        result = await _wait(stream, request, backend)
        return reply.body("text_completion", [{"index": 0, "text": result.text, "logprobs": None,
                                               "finish_reason": FINISH[result.finish_reason]}], usage=_usage(result))

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


# ---- requests ---------------------------------------------------------------------------------------------------

async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 past `limit` bytes (told by Content-Length, or counted as it comes). A body somewhat over
    the limit is read to its end and dropped, so that the client sees the 413 instead of a broken pipe."""
    too_large = APIError(413, f"the request body is larger than {limit} bytes (the server's --max-body-mib)",
                         "invalid_request_error")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await _discard(request, int(declared), limit)
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _discard(request, size, limit)
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _discard(request: Request, size: int, limit: int) -> None:
    if size > max(8 * limit, 64 * 2**20):
        return  # not worth reading: the client gets the answer or a reset connection
    async for _ in request.stream():
        pass


_UNION_TAG = re.compile(r".*\[.*\]$|^(str|int|float|bool|none)$")


def _parse(model, body: bytes):
    """Validate a JSON body; 400 naming the field at fault."""
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as e:
        errors = e.errors(include_url=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise APIError(400, f"the body is not valid JSON: {errors[0]['ctx'].get('error', errors[0]['msg'])}")
        first = errors[0]
        param = ".".join(str(p) for p in first["loc"] if not _UNION_TAG.match(str(p))) or "body"
        message = first["msg"]
        if first["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        raise APIError(400, f"{param}: {message}", param=param) from None


def _chat_prompt(engine: Engine, body: ChatCompletionRequest) -> Prompt:
    """The conversation as the engine's prompt. Earlier assistant messages go in without their
    reasoning_content (R1's template also cuts a `<think>…</think>` out of their content); the template's forced
    `<think>\\n` is handled as chat handles it."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in body.messages]
    try:
        return chat_prompt(engine, messages)
    except ChatTemplateError as e:
        raise APIError(400, str(e), param="messages") from None


def _raw_prompt(engine: Engine, prompt) -> Prompt:
    try:
        return raw_prompt(engine, prompt)
    except InvalidArgumentError as e:
        raise APIError(400, f"{e.param}: {e}", param=e.param) from None


def _submit(backend: Backend, engine: Engine, body, prompt: Prompt, split_reasoning: bool = True) -> Stream:
    default = Sampling()
    try:
        sampling = Sampling(
            temperature=default.temperature if body.temperature is None else body.temperature,
            top_p=default.top_p if body.top_p is None else body.top_p,
            top_k=default.top_k if body.top_k is None else body.top_k, seed=body.seed)
        request = prompt.request(sampling, body.budget, stop=body.stop_strings, split_reasoning=split_reasoning)
        stream = engine.submit(request, loop=asyncio.get_running_loop())
    except ContextFullError:
        raise APIError(400, "the request exceeds the available context size, try increasing it",
                       "exceed_context_size_error", n_prompt_tokens=len(prompt.tokens),
                       n_ctx=engine.n_ctx_seq) from None
    except QueueFullError as e:
        raise _unavailable(f"the server is busy: {e} (start it with a larger --max-queue or --parallel)") from None
    except EngineClosedError:
        raise _unavailable("the server is shutting down") from None
    except InvalidArgumentError as e:
        raise APIError(400, str(e)) from None
    backend.streams.add(stream)
    return stream


async def _cancel_on_disconnect(receive, stream: Stream) -> None:
    """Cancel the generation when the client goes away (the body is read: the next message is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.cancel()
            return


async def _wait(stream: Stream, request: Request, backend: Backend):
    """The result of a non-streaming request; the generation is cancelled if the client goes."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request.receive, stream))
    try:
        async for _ in stream:
            pass
    except Exception as e:
        log.error("generation failed: %s", e)
        raise APIError(500, f"the generation failed: {e}", "server_error") from None
    finally:
        watcher.cancel()
        backend.streams.discard(stream)
    if stream.result.finish_reason == "cancelled":
        raise _unavailable("the server is shutting down" if backend.shutting_down else "the request was cancelled")
    return stream.result


def _usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.gen_tokens,
            "total_tokens": result.prompt_tokens + result.gen_tokens,
            "prompt_tokens_details": {"cached_tokens": result.prompt_tokens - result.prompt_eval_tokens},
            "completion_tokens_details": {"reasoning_tokens": result.reasoning_tokens}}


# ---- answers ----------------------------------------------------------------------------------------------------

class _Reply:
    """The id, time and model every chunk of one answer repeats."""

    def __init__(self, prefix: str, model: str):
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def body(self, object_: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model, "choices": choices,
                **extra}

    def event(self, object_: str, choices: list, **extra) -> bytes:
        return _sse(self.body(object_, choices, **extra))


def _sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def _ending(stream: Stream, reply: _Reply, object_: str, final_choice: dict, include_usage: bool,
                  backend: Backend) -> AsyncIterator[bytes]:
    result = stream.result
    if result.finish_reason == "cancelled":  # the client is gone, or the server is shutting down
        message = "the server is shutting down" if backend.shutting_down else "the request was cancelled"
        yield _sse(APIError(503, message, "unavailable_error").body())
    else:
        yield reply.event(object_, [{**final_choice, "finish_reason": FINISH[result.finish_reason]}])
        if include_usage:
            yield reply.event(object_, [], usage=_usage(result))
    yield DONE


async def _chat_events(stream: Stream, reply: _Reply, include_usage: bool, backend: Backend) -> AsyncIterator[bytes]:
    chunk = "chat.completion.chunk"
    yield reply.event(chunk, [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}])
    async for piece in stream:
        key = "reasoning_content" if piece.kind == "thought" else "content"
        yield reply.event(chunk, [{"index": 0, "delta": {key: piece.text}, "finish_reason": None}])
    async for event in _ending(stream, reply, chunk, {"index": 0, "delta": {}}, include_usage, backend):
        yield event


async def _completion_events(stream: Stream, reply: _Reply, include_usage: bool,
                             backend: Backend) -> AsyncIterator[bytes]:
    async for piece in stream:
        yield reply.event("text_completion", [{"index": 0, "text": piece.text, "logprobs": None,
                                               "finish_reason": None}])
    async for event in _ending(stream, reply, "text_completion", {"index": 0, "text": "", "logprobs": None},
                               include_usage, backend):
        yield event


class EventStream(StreamingResponse):
    """Server-sent events from an async iterator of encoded events. A client that disconnects cancels the
    generation at once (uvicorn drops writes to a closed connection without a word, so the request's receive
    channel is watched for the disconnect); a failure after the first byte becomes an error event."""

    def __init__(self, events: AsyncIterator[bytes], stream: Stream, backend: Backend):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.events, self.stream, self.backend = events, stream, backend

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, self.stream))
        try:
            try:
                async for event in self.events:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            except OSError:
                return  # the client is gone
            except Exception as e:
                log.error("generation failed: %s", e)
                error = APIError(500, f"the generation failed: {e}", "server_error").body()
                await send({"type": "http.response.body", "body": _sse(error) + DONE, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self.stream.cancel()  # nothing if it ended
            self.backend.streams.discard(self.stream)
            await self.events.aclose()
