"""The routes: `/health`, `/v1/models`, `/metrics`, `/v1/chat/completions`, `/v1/completions` (`/v1/responses`
is responses.py, on the chat path); the API key; the request body read within its limit and validated; the
prompt built on the engine's one path (engine/prompt.py)."""
from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ..engine import Engine, EngineClosedError, QueueFullError, Stream
from ..engine.prompt import Prompt, chat_prompt, raw_prompt
from ..engine.thinking import Thinking
from ..errors import ChatTemplateError, ContextFullError, InvalidArgumentError
from .errors import APIError, parse_body, unavailable
from . import params, tools as tool_calls
from .logprobs import chat_logprobs, completion_logprobs
from .metrics import Metrics
from .schemas import ChatCompletionRequest, CompletionRequest
from .streaming import FINISH, EventStream, Reply, chat_events, completion_events, marks, usage, wait_results

log = logging.getLogger(__name__)

PUBLIC = ("/health", "/v1/models")  # answered without the API key


def authorizer(config):
    """The check of a request's API key (none when the server has no key)."""
    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
            raise APIError(401, "Invalid API Key", "authentication_error", headers={"WWW-Authenticate": "Bearer"})

    return authorize


def add_routes(app: FastAPI, config, backend, metrics: Metrics) -> None:
    authorize = authorizer(config)

    @app.get("/health")
    async def health():
        if backend.load_error is not None:
            raise APIError(500, f"the model failed to load: {backend.load_error}", "server_error")
        backend.ready()
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        entry = {"id": config.model_id, "object": "model", "created": config.created, "owned_by": "quantkit"}
        if config.model_marks:  # how the file was made (an extension field, as in the answers)
            entry["quantkit"] = config.model_marks
        return {"object": "list", "data": [entry]}

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
        body = parse_body(ChatCompletionRequest, await _read_body(request, config.max_body_bytes))
        engine = backend.ready()
        if backend.template is None:
            raise APIError(400, f"{backend.template_error}; use /v1/completions with a raw prompt")
        tools = tool_calls.tool_set(body, backend.template)
        prompt = await run_in_threadpool(_chat_prompt, engine, body, tools)
        split = config.reasoning_format == "deepseek"
        streams = _submit(backend, engine, body, prompt, _thinking(config, body), split_reasoning=split,
                          response_format=body.response_format, tools=tools)
        reply = Reply("chatcmpl", config.model_id)
        logprobs = body.n_logprobs is not None
        if body.stream:
            return EventStream(chat_events(streams, reply, body.include_usage, backend, split, logprobs,
                                           tools is not None), streams, backend)
        results = await wait_results(streams, request, backend)
        choices = [_chat_choice(i, r, split, logprobs, tools is not None) for i, r in enumerate(results)]
        return reply.body("chat.completion", choices, usage=usage(results), quantkit=marks(results[0]))

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        body = parse_body(CompletionRequest, await _read_body(request, config.max_body_bytes))
        engine = backend.ready()
        prompt = await run_in_threadpool(_raw_prompt, engine, body.prompt)
        streams = _submit(backend, engine, body, prompt, _thinking(config, body))
        reply = Reply("cmpl", config.model_id)
        logprobs = body.n_logprobs is not None
        if body.stream:
            return EventStream(completion_events(streams, reply, body.include_usage, backend, logprobs), streams,
                               backend)
        results = await wait_results(streams, request, backend)
        return reply.body("text_completion", [
            {"index": i, "text": r.text, "logprobs": completion_logprobs(r.logprobs) if logprobs else None,
             "finish_reason": FINISH[r.finish_reason]} for i, r in enumerate(results)],
            usage=usage(results), quantkit=marks(results[0]))


def _chat_choice(index: int, result, split: bool, logprobs: bool, tools: bool = False) -> dict:
    message = {"role": "assistant"}
    if split and result.reasoning:
        message["reasoning_content"] = result.reasoning
    message["content"] = result.answer if split else result.text
    finish = FINISH[result.finish_reason]
    if tools:
        message["content"], calls = tool_calls.parse_calls(message["content"])
        if calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = calls
            finish = "tool_calls"
    return {"index": index, "message": message,
            "logprobs": chat_logprobs(result.logprobs, split) if logprobs else None,
            "finish_reason": finish, "quantkit": marks(result)}


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


def _chat_prompt(engine: Engine, body: ChatCompletionRequest, tools=None) -> Prompt:
    """The conversation as the engine's prompt. Earlier assistant messages go in without their
    reasoning_content (R1's template also cuts a `<think>…</think>` out of their content); the template's forced
    `<think>\\n` is handled as chat handles it; tool calls and results as the template writes them."""
    messages = tool_calls.template_messages(body.messages, tools)
    try:
        return chat_prompt(engine, messages)
    except ChatTemplateError as e:
        raise APIError(400, str(e), param="messages") from None


def _raw_prompt(engine: Engine, prompt) -> Prompt:
    try:
        return raw_prompt(engine, prompt)
    except InvalidArgumentError as e:
        raise APIError(400, f"{e.param}: {e}", param=e.param) from None


def _thinking(config, body) -> Thinking:
    """The request's thought control: its `reasoning_budget`, else its `reasoning_effort` by the server's table,
    else the server's default; the server's closing message and loop guard."""
    default = config.thinking
    budget = default.budget
    if body.reasoning_budget is not None:
        budget = body.reasoning_budget
    elif body.reasoning_effort is not None:
        if body.reasoning_effort not in config.effort_budgets:
            raise APIError(400, f"reasoning_effort: {body.reasoning_effort!r} is not one of "
                                f"{', '.join(config.effort_budgets)}", param="reasoning_effort")
        budget = config.effort_budgets[body.reasoning_effort]
    return Thinking(budget, default.message, default.loop_guard)


def _submit(backend, engine: Engine, body, prompt: Prompt, thinking: Thinking, split_reasoning: bool = True,
            response_format=None, tools=None) -> list[Stream]:
    """The request's `n` choices queued on the engine (one prompt, evaluated once)."""
    sampling = params.sampling(body, engine.model.n_vocab)
    try:
        request = prompt.request(sampling, body.budget, stop=body.stop_strings, split_reasoning=split_reasoning,
                                 thinking=thinking, logprobs=body.n_logprobs)
        request = params.with_grammar(request, response_format)
        if tools is not None:
            request = params.with_tools(request, tools)
        streams = engine.submit_many(params.choices(request, body.n), loop=asyncio.get_running_loop(),
                                     share_prompt=True)
    except ContextFullError:
        raise APIError(400, "the request exceeds the available context size, try increasing it",
                       "exceed_context_size_error", n_prompt_tokens=len(prompt.tokens),
                       n_ctx=engine.n_ctx_seq) from None
    except QueueFullError as e:
        raise unavailable(f"the server is busy: {e} (start it with a larger --max-queue or --parallel)") from None
    except EngineClosedError:
        raise unavailable("the server is shutting down") from None
    except InvalidArgumentError as e:
        raise APIError(400, str(e)) from None
    backend.streams.update(streams)
    return streams
