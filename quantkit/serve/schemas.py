"""Request bodies of the OpenAI-compatible API, validated by pydantic: what a client may send, and no more.

Types are strict (a temperature of "0.5" is an error, as at OpenAI). Every OpenAI parameter is either honoured
or refused with a 400 naming it (UNSUPPORTED): a parameter silently ignored makes a client compute the wrong
thing. `user`, `metadata`, `store`, `service_tier` and the like, which say who asks or how to bill, not what to
generate, are accepted and ignored; so are fields OpenAI does not know (llama-server does the same).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP = 16  # stop strings per request (OpenAI allows 4)
MAX_CHOICES = 16  # n
MAX_TOP_LOGPROBS = 20  # chat's top_logprobs, as at OpenAI
MAX_COMPLETION_LOGPROBS = 5  # completions' logprobs, as at OpenAI

# OpenAI parameters this server does not implement: refused when set to anything but their no-op value
UNSUPPORTED = {
    "tools": "tool calls are not supported by this server",
    "tool_choice": "tool calls are not supported by this server",
    "functions": "function calls are not supported by this server",
    "function_call": "function calls are not supported by this server",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "echo": "echo is not supported",
    "suffix": "suffix (fill-in-the-middle) is not supported",
}
NO_OP = {"tools": ([],), "tool_choice": ("none",), "echo": (False,), "modalities": (["text"],)}


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    # "developer" is OpenAI's newer name for "system"
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    reasoning_content: Optional[str] = None  # sent back by some clients; never fed to the model
    tool_calls: Optional[list[ToolCall]] = None  # an assistant's earlier calls
    tool_call_id: Optional[str] = None  # a tool message: the call it answers
    name: Optional[str] = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


class _Generation(_Body):
    """What chat and raw completions share: sampling, budget, stop strings, streaming."""

    model: Optional[str] = None  # accepted and ignored: this server serves one model
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)  # llama-server's extension
    max_tokens: Optional[int] = Field(None, ge=1)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    reasoning_budget: Optional[int] = Field(None, ge=0)  # quantkit's extension: most thought tokens
    reasoning_effort: Optional[str] = None  # OpenAI's: low, medium or high, mapped to the server's budgets
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    repeat_penalty: Optional[float] = Field(None, gt=0)  # llama-server's extension
    min_p: Optional[float] = Field(None, ge=0, le=1)  # llama-server's extension
    logit_bias: Optional[dict[str, float]] = None  # token id (as a string) → bias in [-100, 100]; -100 bans it
    # who asks and what to keep: accepted and ignored
    user: Optional[str] = None
    metadata: Optional[dict[str, str]] = None
    store: Optional[bool] = None

    refused: ClassVar[dict[str, str]] = UNSUPPORTED

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data):
        if isinstance(data, dict):
            for key, why in cls.refused.items():
                if data.get(key) is not None and data[key] not in NO_OP.get(key, ()):
                    raise ValueError(f"{key}: {why}")
            if data.get("modalities") not in (None, *NO_OP["modalities"]):
                raise ValueError("modalities: only text output is supported")
        return data

    @field_validator("logit_bias")
    @classmethod
    def _biases(cls, value):
        for key, bias in (value or {}).items():
            if not key.isdigit():
                raise ValueError(f"the keys are token ids, not {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"a bias is in [-100, 100], not {bias}")
        return value

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value):
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        return value

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def budget(self) -> int | None:
        return self.max_tokens


class JSONSchemaFormat(_Body):
    name: str = Field(min_length=1, max_length=64)
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema")
    description: Optional[str] = None
    strict: Optional[bool] = None  # the grammar always holds the answer to the schema


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema: required with type json_schema")
        return self


class FunctionDef(_Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None  # the grammar always holds the arguments to the schema


class ToolDef(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Body):
    name: str


class NamedTool(_Body):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(_Generation):
    refused: ClassVar[dict[str, str]] = {k: v for k, v in UNSUPPORTED.items() if k not in ("tools", "tool_choice")}

    messages: list[Message] = Field(min_length=1)
    tools: Optional[list[ToolDef]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedTool, None] = None
    max_completion_tokens: Optional[int] = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: Optional[ResponseFormat] = None
    parallel_tool_calls: Optional[bool] = None  # false: at most one tool call

    @model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs set to true")
        if self.tools and self.tool_choice != "none" and self.response_format is not None and \
                self.response_format.type != "text":
            raise ValueError("response_format: cannot be combined with tools (both constrain the answer)")
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise ValueError("tool_choice: there are no tools to choose from")
        return self

    @property
    def n_logprobs(self) -> int | None:
        """Alternatives per token when logprobs are asked (None: not asked)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Generation):
    # a text, a list holding one text, or token ids
    prompt: Union[str, list[str], list[int]]
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    best_of: Optional[int] = Field(None, ge=1)
    echo: bool = False
    suffix: Optional[str] = None

    @model_validator(mode="after")
    def _best_of_is_n(self):
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of: only best_of equal to n is supported (no ranking of choices)")
        return self

    @property
    def n_logprobs(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list) and value and isinstance(value[0], str) and len(value) != 1:
            raise ValueError("one prompt per request")
        if isinstance(value, list) and not value:
            raise ValueError("the prompt is empty")
        return value
