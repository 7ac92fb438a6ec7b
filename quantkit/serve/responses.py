"""`POST /v1/responses`, OpenAI's Responses API, mapped onto the chat path as llama-server maps it: the input
items (and `instructions`, as a system message) become chat messages, `text.format` the response_format,
`reasoning.effort` the reasoning_effort, `max_output_tokens` the budget; the answer comes back as output items —
a `reasoning` item whose `content` carries the thought (`reasoning_text`), then the assistant `message`.
Streamed, it is OpenAI's typed events (`response.created` … `response.completed`).

Nothing is stored: `previous_response_id` is refused, `store` accepted and ignored. Tools and the parameters this
server does not implement are refused with a 400 naming them, as in chat.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal, Optional, Union

from fastapi import FastAPI, Request
from pydantic import Field, model_validator
from starlette.concurrency import run_in_threadpool

from .errors import APIError, parse_body
from .routes import _chat_prompt, _read_body, _submit, _thinking, authorizer
from .schemas import ChatCompletionRequest, _Body
from .streaming import EventStream, marks, merged, wait_results

INPUT_PARTS = ("input_text", "output_text", "text")
SUMMARIES = (None, "auto")  # the reasoning item carries the whole thought: there is no shorter summary
REFUSED = {
    "tools": "tool calls are not supported by this server",
    "previous_response_id": "this server stores no responses: send the whole conversation as input",
    "conversation": "this server stores no conversations: send the whole conversation as input",
    "prompt": "stored prompts are not supported",
    "background": "background responses are not supported",
    "top_logprobs": "logprobs are not supported on /v1/responses (use /v1/chat/completions)",
    "max_tool_calls": "tool calls are not supported by this server",
}
NO_OP = {"tools": ([],), "background": (False,), "top_logprobs": (0,)}


class InputPart(_Body):
    type: str
    text: Optional[str] = None

    @model_validator(mode="after")
    def _text_only(self):
        if self.type not in INPUT_PARTS or self.text is None:
            raise ValueError(f"only text parts ({', '.join(INPUT_PARTS)}) are supported, not {self.type!r}")
        return self


class InputItem(_Body):
    type: Literal["message", "reasoning"] = "message"
    role: Optional[Literal["user", "assistant", "system", "developer"]] = None
    content: Union[str, list[InputPart], None] = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data):
        if isinstance(data, dict) and data.get("type") in ("function_call", "function_call_output"):
            raise ValueError("function call items are not supported (tool calls are not supported by this server)")
        return data

    @property
    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text for part in self.content)


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    name: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema")
    description: Optional[str] = None
    strict: Optional[bool] = None


class TextOptions(_Body):
    format: Optional[TextFormat] = None


class ReasoningOptions(_Body):
    effort: Optional[str] = None
    summary: Optional[str] = None

    @model_validator(mode="after")
    def _no_summary(self):
        if self.summary not in SUMMARIES:
            raise ValueError(f"summary: only 'auto' (the whole thought, in the reasoning item's content) is "
                             f"supported, not {self.summary!r}")
        return self


class ResponsesRequest(_Body):
    model: Optional[str] = None
    input: Union[str, list[InputItem]]
    instructions: Optional[str] = None
    max_output_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    stream: bool = False
    reasoning: Optional[ReasoningOptions] = None
    text: Optional[TextOptions] = None
    tool_choice: Optional[Union[str, dict]] = None
    parallel_tool_calls: Optional[bool] = None
    truncation: Optional[Literal["disabled"]] = None  # "auto" (dropping input to fit) is refused
    include: Optional[list[Literal["reasoning.encrypted_content"]]] = None  # the thought is sent in clear anyway
    # who asks and what to keep: accepted and ignored
    store: Optional[bool] = None
    metadata: Optional[dict[str, str]] = None
    user: Optional[str] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    service_tier: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data):
        if isinstance(data, dict):
            for key, why in REFUSED.items():
                if data.get(key) is not None and data[key] not in NO_OP.get(key, ()):
                    raise ValueError(f"{key}: {why}")
            if data.get("tool_choice") not in (None, "none", "auto"):
                raise ValueError("tool_choice: tool calls are not supported by this server")
        return data

    def messages(self) -> list[dict]:
        """The conversation as chat messages; reasoning items sent back are not fed to the model."""
        out = [{"role": "system", "content": self.instructions}] if self.instructions else []
        if isinstance(self.input, str):
            return [*out, {"role": "user", "content": self.input}]
        for item in self.input:
            if item.type == "message":
                out.append({"role": item.role or "user", "content": item.text})
        return out

    def chat_request(self) -> ChatCompletionRequest:
        fmt = self.text.format if self.text is not None else None
        response_format = None
        if fmt is not None:
            response_format = {"type": fmt.type}
            if fmt.type == "json_schema":
                response_format["json_schema"] = {"name": fmt.name or "response", "schema": fmt.schema_}
        body = {"messages": self.messages(), "temperature": self.temperature, "top_p": self.top_p,
                "max_completion_tokens": self.max_output_tokens, "response_format": response_format,
                "reasoning_effort": self.reasoning.effort if self.reasoning else None}
        return parse_body(ChatCompletionRequest, json.dumps(body).encode())


def add_responses_route(app: FastAPI, config, backend) -> None:
    authorize = authorizer(config)

    @app.post("/v1/responses")
    async def responses(request: Request):
        authorize(request)
        body = parse_body(ResponsesRequest, await _read_body(request, config.max_body_bytes))
        chat = body.chat_request()
        engine = backend.ready()
        if backend.template is None:
            raise APIError(400, f"{backend.template_error}; use /v1/completions with a raw prompt")
        prompt = await run_in_threadpool(_chat_prompt, engine, chat)
        split = config.reasoning_format == "deepseek"
        streams = _submit(backend, engine, chat, prompt, _thinking(config, chat), split_reasoning=split,
                          response_format=chat.response_format)
        reply = _Reply(config.model_id, body, split)
        if body.stream:
            return EventStream(_events(streams[0], reply, backend), streams, backend)
        [result] = await wait_results(streams, request, backend)
        return reply.response(result)


class _Reply:
    """The ids and settings one response repeats."""

    def __init__(self, model: str, body: ResponsesRequest, split: bool = True):
        self.id = f"resp_{uuid.uuid4().hex}"
        self.reasoning_id = f"rs_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.body = body
        self.split = split  # the thought apart (--reasoning-format deepseek), or left in the message's text

    def response(self, result=None, status: str | None = None) -> dict:
        """The response object: in progress (no result yet), or completed / incomplete with its output."""
        body = self.body
        out = {
            "id": self.id, "object": "response", "created_at": self.created, "model": self.model,
            "status": status or ("in_progress" if result is None else _status(result)), "error": None,
            "incomplete_details": None, "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "metadata": body.metadata or {}, "parallel_tool_calls": False, "tool_choice": "none", "tools": [],
            "temperature": body.temperature, "top_p": body.top_p, "store": False, "truncation": "disabled",
            "reasoning": body.reasoning.model_dump() if body.reasoning else None,
            "text": {"format": body.text.format.model_dump(by_alias=True, exclude_none=True)}
            if body.text and body.text.format else {"format": {"type": "text"}},
            "output": [], "usage": None,
        }
        if result is None:
            return out
        if result.finish_reason in ("length", "context"):
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        out["output"] = self.output(result)
        out["usage"] = _usage(result)
        out["quantkit"] = marks(result)
        return out

    def output(self, result) -> list[dict]:
        items = []
        if self.split and result.reasoning:
            items.append(self.reasoning_item(result.reasoning))
        items.append(self.message_item(result.answer if self.split else result.text, _status(result)))
        return items

    def reasoning_item(self, thought: str | None) -> dict:
        content = [] if thought is None else [{"type": "reasoning_text", "text": thought}]
        return {"type": "reasoning", "id": self.reasoning_id, "summary": [], "content": content}

    def message_item(self, text: str | None, status: str) -> dict:
        content = [] if text is None else [_text_part(text)]
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant",
                "content": content}


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _status(result) -> str:
    return "incomplete" if result.finish_reason in ("length", "context") else "completed"


def _usage(result) -> dict:
    return {"input_tokens": result.prompt_tokens,
            "input_tokens_details": {"cached_tokens": result.prompt_tokens - result.prompt_eval_tokens},
            "output_tokens": result.gen_tokens, "output_tokens_details": {"reasoning_tokens": result.reasoning_tokens},
            "total_tokens": result.prompt_tokens + result.gen_tokens}


class _Events:
    """Typed server-sent events, numbered."""

    def __init__(self):
        self.n = 0

    def __call__(self, kind: str, **data) -> bytes:
        payload = {"type": kind, "sequence_number": self.n, **data}
        self.n += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


async def _events(stream, reply: _Reply, backend) -> AsyncIterator[bytes]:
    """response.created, then per output item (the reasoning, then the message) its added / delta / done
    events, then response.completed (or response.incomplete, or an error event when cancelled)."""
    event = _Events()
    yield event("response.created", response=reply.response())
    yield event("response.in_progress", response=reply.response())
    index, open_item, texts = -1, None, {"thought": "", "answer": ""}

    def close(kind: str):
        text = texts[kind]
        if kind == "thought":
            yield event("response.reasoning_text.done", item_id=reply.reasoning_id, output_index=index,
                        content_index=0, text=text)
            yield event("response.output_item.done", output_index=index, item=reply.reasoning_item(text))
        else:
            yield event("response.output_text.done", item_id=reply.message_id, output_index=index,
                        content_index=0, text=text, logprobs=[])
            yield event("response.content_part.done", item_id=reply.message_id, output_index=index,
                        content_index=0, part=_text_part(text))
            yield event("response.output_item.done", output_index=index,
                        item=reply.message_item(text, "completed"))

    def open_(kind: str):
        if kind == "thought":
            yield event("response.output_item.added", output_index=index, item=reply.reasoning_item(None))
            yield event("response.content_part.added", item_id=reply.reasoning_id, output_index=index,
                        content_index=0, part={"type": "reasoning_text", "text": ""})
        else:
            yield event("response.output_item.added", output_index=index,
                        item=reply.message_item(None, "in_progress"))
            yield event("response.content_part.added", item_id=reply.message_id, output_index=index,
                        content_index=0, part=_text_part(""))

    async for _, piece in merged([stream]):
        if piece is None:
            break
        if piece.kind != open_item:
            if open_item is not None:
                for e in close(open_item):
                    yield e
            index, open_item = index + 1, piece.kind
            for e in open_(open_item):
                yield e
        texts[piece.kind] += piece.text
        if piece.kind == "thought":
            yield event("response.reasoning_text.delta", item_id=reply.reasoning_id, output_index=index,
                        content_index=0, delta=piece.text)
        else:
            yield event("response.output_text.delta", item_id=reply.message_id, output_index=index,
                        content_index=0, delta=piece.text, logprobs=[])
    result = stream.result
    if result.finish_reason == "cancelled":
        message = "the server is shutting down" if backend.shutting_down else "the request was cancelled"
        yield event("error", code="unavailable_error", message=message, param=None)
        return
    if open_item != "answer":  # no answer text (the thought was cut off, or nothing at all): an empty message
        if open_item is not None:
            for e in close(open_item):
                yield e
        index, open_item = index + 1, "answer"
        for e in open_(open_item):
            yield e
    for e in close(open_item):
        yield e
    final = reply.response(result)
    yield event("response.completed" if final["status"] == "completed" else "response.incomplete", response=final)
