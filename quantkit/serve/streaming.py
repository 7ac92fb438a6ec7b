"""Answers as OpenAI's clients read them: a whole body, or server-sent events chunk by chunk, with usage, the
finish reason in OpenAI's words, and the cancellation of the generation when the client goes away."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..engine import Stream
from .errors import APIError, unavailable

log = logging.getLogger(__name__)

FINISH = {"stop": "stop", "length": "length", "context": "length"}  # the engine's word → OpenAI's


async def _cancel_on_disconnect(receive, stream: Stream) -> None:
    """Cancel the generation when the client goes away (the body is read: the next message is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.cancel()
            return


async def wait_result(stream: Stream, request: Request, backend):
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
        raise unavailable("the server is shutting down" if backend.shutting_down else "the request was cancelled")
    return stream.result


def usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.gen_tokens,
            "total_tokens": result.prompt_tokens + result.gen_tokens,
            "prompt_tokens_details": {"cached_tokens": result.prompt_tokens - result.prompt_eval_tokens},
            "completion_tokens_details": {"reasoning_tokens": result.reasoning_tokens,
                                          "accepted_prediction_tokens": result.accepted_tokens,
                                          "rejected_prediction_tokens": result.rejected_tokens}}


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


async def _ending(stream: Stream, reply: Reply, object_: str, final_choice: dict, include_usage: bool,
                  backend) -> AsyncIterator[bytes]:
    result = stream.result
    if result.finish_reason == "cancelled":  # the client is gone, or the server is shutting down
        message = "the server is shutting down" if backend.shutting_down else "the request was cancelled"
        yield _sse(APIError(503, message, "unavailable_error").body())
    else:
        yield reply.event(object_, [{**final_choice, "finish_reason": FINISH[result.finish_reason]}],
                          quantkit=marks(result))
        if include_usage:
            yield reply.event(object_, [], usage=usage(result))
    yield DONE


async def chat_events(stream: Stream, reply: Reply, include_usage: bool, backend) -> AsyncIterator[bytes]:
    chunk = "chat.completion.chunk"
    yield reply.event(chunk, [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}])
    async for piece in stream:
        key = "reasoning_content" if piece.kind == "thought" else "content"
        yield reply.event(chunk, [{"index": 0, "delta": {key: piece.text}, "finish_reason": None}])
    async for event in _ending(stream, reply, chunk, {"index": 0, "delta": {}}, include_usage, backend):
        yield event


async def completion_events(stream: Stream, reply: Reply, include_usage: bool,
                             backend) -> AsyncIterator[bytes]:
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

    def __init__(self, events: AsyncIterator[bytes], stream: Stream, backend):
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
