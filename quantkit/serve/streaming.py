"""Answers as OpenAI's clients read them: a whole body, or server-sent events chunk by chunk, with usage, the
finish reason in OpenAI's words, and the cancellation of the generation when the client goes away. A request
with `n` choices is `n` engine streams, answered together (chunks of the choices interleaved, each with its
index)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..engine import Stream
from .errors import APIError, unavailable
from .logprobs import chat_logprobs, completion_logprobs
from .tools import CallFilter, parse_calls

log = logging.getLogger(__name__)

FINISH = {"stop": "stop", "length": "length", "context": "length"}  # the engine's word → OpenAI's


async def _cancel_on_disconnect(receive, streams: list[Stream]) -> None:
    """Cancel the generation when the client goes away (the body is read: the next message is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            for stream in streams:
                stream.cancel()
            return


async def wait_results(streams: list[Stream], request: Request, backend) -> list:
    """The results of a non-streaming request; the generations are cancelled if the client goes."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request.receive, streams))
    try:
        async for _ in merged(streams):
            pass
    except Exception as e:
        log.error("generation failed: %s", e)
        raise APIError(500, f"the generation failed: {e}", "server_error") from None
    finally:
        watcher.cancel()
        for stream in streams:
            stream.cancel()  # nothing if it ended
            backend.streams.discard(stream)
    if any(stream.result.finish_reason == "cancelled" for stream in streams):
        raise unavailable("the server is shutting down" if backend.shutting_down else "the request was cancelled")
    return [stream.result for stream in streams]


async def merged(streams: list[Stream]) -> AsyncIterator[tuple[int, object]]:
    """(choice index, piece) as the pieces of all streams come, and (index, None) when stream `index` ended."""
    if len(streams) == 1:
        async for piece in streams[0]:
            yield 0, piece
        yield 0, None
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: Stream) -> None:
        try:
            async for piece in stream:
                await queue.put((index, piece))
            await queue.put((index, None))
        except Exception as e:  # handed to the reader
            await queue.put((index, e))

    tasks = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        for _ in streams:
            while True:
                index, item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield index, item
                if item is None:
                    break
    finally:
        for task in tasks:
            task.cancel()


def usage(results: list) -> dict:
    """The usage of one request (its choices share the prompt: it is counted once)."""
    first = results[0]
    generated = sum(r.gen_tokens for r in results)
    return {"prompt_tokens": first.prompt_tokens, "completion_tokens": generated,
            "total_tokens": first.prompt_tokens + generated,
            "prompt_tokens_details": {"cached_tokens": first.prompt_tokens - first.prompt_eval_tokens},
            "completion_tokens_details": {"reasoning_tokens": sum(r.reasoning_tokens for r in results),
                                          "accepted_prediction_tokens": sum(r.accepted_tokens for r in results),
                                          "rejected_prediction_tokens": sum(r.rejected_tokens for r in results)}}


def marks(result) -> dict:
    """The `quantkit` extension field of an answer: what the engine did to the thought."""
    return {"forced_tokens": result.forced_tokens, "budget_reached": result.budget_reached, "looped": result.looped}


class Reply:
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


async def _events(streams: list[Stream], reply: Reply, object_: str, delta: Callable[[int, object], dict | None],
                  final_choice: Callable[[int], dict], include_usage: bool, backend,
                  last: Callable[[int], list[dict]] = lambda index: []) -> AsyncIterator[bytes]:
    """The chunks of every choice (`delta` None: nothing to send for that piece), each choice's `last` chunks and
    its last chunk with its finish reason, usage, `[DONE]`."""
    async for index, piece in merged(streams):
        if piece is not None:
            if (choice := delta(index, piece)) is not None:
                yield reply.event(object_, [{"index": index, **choice, "finish_reason": None}])
            continue
        result = streams[index].result
        if result.finish_reason == "cancelled":  # the client is gone, or the server is shutting down
            message = "the server is shutting down" if backend.shutting_down else "the request was cancelled"
            yield _sse(APIError(503, message, "unavailable_error").body())
            yield DONE
            return
        for choice in last(index):
            yield reply.event(object_, [{"index": index, **choice, "finish_reason": None}])
        yield reply.event(object_, [{"finish_reason": FINISH[result.finish_reason], **final_choice(index)}],
                          quantkit=marks(result))
    if include_usage:
        yield reply.event(object_, [], usage=usage([stream.result for stream in streams]))
    yield DONE


async def chat_events(streams: list[Stream], reply: Reply, include_usage: bool, backend, split: bool = True,
                      logprobs: bool = False, tools: bool = False) -> AsyncIterator[bytes]:
    """Chat chunks. With tools, the answer streams up to the tool-call markup; the calls, parsed once the
    generation ended, come as one `delta.tool_calls` chunk each, and the finish reason is "tool_calls"."""
    chunk = "chat.completion.chunk"
    filters = [CallFilter() for _ in streams]
    calls: dict[int, list] = {}
    for index in range(len(streams)):
        yield reply.event(chunk, [{"index": index, "delta": {"role": "assistant", "content": None},
                                   "finish_reason": None}])

    def delta(index: int, piece) -> dict | None:
        key = "reasoning_content" if piece.kind == "thought" else "content"
        text = piece.text
        if tools and key == "content":
            text = filters[index].feed(text)
        out = {"delta": {key: text} if text else {}}
        if logprobs:
            out["logprobs"] = chat_logprobs(piece.logprobs, split)
        return out if text or logprobs else None

    def last(index: int) -> list[dict]:
        if not tools:
            return []
        rest = filters[index].flush()
        result = streams[index].result
        _, calls[index] = parse_calls(result.answer if split else result.text)
        out = [{"delta": {"content": rest}}] if rest and not calls[index] else []
        return out + [{"delta": {"tool_calls": [{"index": i, **call}]}} for i, call in enumerate(calls[index])]

    def final(index: int) -> dict:
        return {"index": index, "delta": {}, **({"finish_reason": "tool_calls"} if calls.get(index) else {})}

    async for event in _events(streams, reply, chunk, delta, final, include_usage, backend, last):
        yield event


async def completion_events(streams: list[Stream], reply: Reply, include_usage: bool, backend,
                            logprobs: bool = False) -> AsyncIterator[bytes]:
    offsets = [0] * len(streams)

    def delta(index: int, piece) -> dict:
        entries = completion_logprobs(piece.logprobs, offsets[index]) if logprobs else None
        offsets[index] += len(piece.text)
        return {"text": piece.text, "logprobs": entries}

    async for event in _events(streams, reply, "text_completion", delta,
                               lambda i: {"index": i, "text": "", "logprobs": None}, include_usage, backend):
        yield event


class EventStream(StreamingResponse):
    """Server-sent events from an async iterator of encoded events. A client that disconnects cancels the
    generation at once (uvicorn drops writes to a closed connection without a word, so the request's receive
    channel is watched for the disconnect); a failure after the first byte becomes an error event."""

    def __init__(self, events: AsyncIterator[bytes], streams: list[Stream], backend, headers: dict | None = None):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})
        self.events, self.streams, self.backend = events, streams, backend

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, self.streams))
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
            for stream in self.streams:
                stream.cancel()  # nothing if it ended
                self.backend.streams.discard(stream)
            await self.events.aclose()
