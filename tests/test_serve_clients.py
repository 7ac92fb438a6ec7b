"""Clients people put in front of a local model, unchanged, against a live `quantkit serve` on the scripted R1
model: LangChain's ChatOpenAI (invoke, stream, with_structured_output through response_format json_schema) and
LiteLLM's `completion(..., api_base=...)`, streamed and not."""
from __future__ import annotations

import os
from typing import Literal

import pytest
from pydantic import BaseModel

from tests._fixtures import scripted as S
from tests._fixtures.serve import start

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch its price list at import
os.environ.setdefault("LANGSMITH_TRACING", "false")

QUESTION = "What is 2+2?"


class Sum(BaseModel):
    answer: int
    unit: Literal["apples", "pears"]


@pytest.fixture(scope="module")
def server(scripted_gguf):
    with start(scripted_gguf, "--ctx", "4096", "--threads", "1") as s:
        yield s


@pytest.fixture(scope="module")
def chat(server):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=server.base + "/v1", api_key="unused", model="r1", temperature=0, max_retries=0)


def test_langchain_invoke_and_stream(chat):
    assert chat.invoke(QUESTION).content == S.ANSWER
    assert "".join(chunk.content for chunk in chat.stream(QUESTION)) == S.ANSWER


def test_langchain_structured_output(chat):
    result = chat.with_structured_output(Sum).invoke(QUESTION)  # json_schema: the grammar holds the answer
    assert isinstance(result, Sum) and result.unit in ("apples", "pears")


def test_litellm_completion(server):
    import litellm

    ask = dict(model="openai/r1", api_base=server.base + "/v1", api_key="unused", temperature=0,
               messages=[{"role": "user", "content": QUESTION}])
    r = litellm.completion(**ask)
    assert r.choices[0].message.content == S.ANSWER
    assert r.usage.completion_tokens == S.REASONING_TOKENS + S.ANSWER_TOKENS
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in litellm.completion(stream=True, **ask))
    assert streamed == S.ANSWER
