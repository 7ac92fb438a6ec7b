"""Request bodies of the OpenAI-compatible API, validated by pydantic: what a client may send, and no more.

Types are strict (a temperature of "0.5" is an error, as at OpenAI); fields this server does not use
(`presence_penalty`, `user`, `logit_bias` …) are accepted and ignored, as llama-server does, so that clients
that always send them keep working.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP = 16  # stop strings per request (OpenAI allows 4)


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    # "developer" is OpenAI's newer name for "system"
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None
    reasoning_content: Optional[str] = None  # sent back by some clients; never fed to the model

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
    n: int = 1
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    reasoning_budget: Optional[int] = Field(None, ge=0)  # quantkit's extension: most thought tokens
    reasoning_effort: Optional[str] = None  # OpenAI's: low, medium or high, mapped to the server's budgets

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value):
        if value != 1:
            raise ValueError("only n=1 is supported (one choice per request)")
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


class ChatCompletionRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)  # OpenAI's newer name for max_tokens

    @property
    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Generation):
    # a text, a list holding one text, or token ids
    prompt: Union[str, list[str], list[int]]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list) and value and isinstance(value[0], str) and len(value) != 1:
            raise ValueError("one prompt per request")
        if isinstance(value, list) and not value:
            raise ValueError("the prompt is empty")
        return value
