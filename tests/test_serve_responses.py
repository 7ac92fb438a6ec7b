"""`POST /v1/responses` through a live `quantkit serve` and the real `openai` client, on the scripted R1 model: the
thought in a `reasoning` item's content, the answer in the message (streamed as OpenAI's typed events, and not),
instructions, max_output_tokens, structured output, what is refused; CORS off by default, `--cors-origin` on."""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests._fixtures import scripted as S
from tests._fixtures.serve import start

ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="module")
def server(scripted_gguf):
    with start(scripted_gguf, "--ctx", "4096", "--threads", "1", "--cors-origin", ORIGIN) as s:
        yield s


def test_a_response_carries_the_thought_in_a_reasoning_item(server):
    r = server.openai().responses.create(model="x", input="What is 2+2?", temperature=0)
    assert r.status == "completed" and [item.type for item in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == S.THOUGHT and r.output[0].content[0].type == "reasoning_text"
    assert r.output_text == S.ANSWER
    assert r.usage.output_tokens == S.REASONING_TOKENS + S.ANSWER_TOKENS
    assert r.usage.output_tokens_details.reasoning_tokens == S.REASONING_TOKENS


def test_a_streamed_response_is_openais_typed_events(server):
    events = list(server.openai().responses.create(model="x", input=[{"role": "user", "content": "hi"}],
                                                   instructions="Be brief.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    answer = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert thought == S.THOUGHT and answer == S.ANSWER
    done = [e.item.type for e in events if e.type == "response.output_item.done"]
    assert done == ["reasoning", "message"]
    assert events[-1].response.output_text == S.ANSWER


def test_max_output_tokens_makes_an_incomplete_response(server):
    r = server.openai().responses.create(model="x", input="hi", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].content[0].text == "".join(S.THOUGHT_PIECES[:3])


def test_text_format_json_schema(server):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    r = server.openai().responses.create(model="x", input="hi", temperature=0,
                                         text={"format": {"type": "json_schema", "name": "a", "schema": schema}})
    assert r.output[0].content[0].text == S.THOUGHT
    assert isinstance(json.loads(r.output_text)["a"], int)


REFUSED = {
    "tools": {"tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]},
    "previous_response_id": {"previous_response_id": "resp_1"},
    "background": {"background": True},
    "truncation": {"truncation": "auto"},
    "input": {"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
}


@pytest.mark.parametrize("param", REFUSED, ids=list(REFUSED))
def test_what_is_not_implemented_is_400_naming_it(server, param):
    body = {"model": "x", "input": "hi", **REFUSED[param]}
    r = server.post("/v1/responses", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(param)


def test_the_client_sees_a_refusal(server):
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        server.openai().responses.create(model="x", input="hi", previous_response_id="resp_1")


def test_cors_allows_the_one_origin(server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    r = httpx.options(server.base + "/v1/responses", headers={"Origin": ORIGIN, **preflight})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.options(server.base + "/v1/responses", headers={"Origin": "http://elsewhere.example", **preflight})
    assert "access-control-allow-origin" not in r.headers
    r = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                    headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_cors_is_off_by_default(scripted_gguf):
    with start(scripted_gguf, "--ctx", "512", "--threads", "1") as s:
        r = httpx.options(s.base + "/v1/chat/completions",
                          headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
        r = s.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                   headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
