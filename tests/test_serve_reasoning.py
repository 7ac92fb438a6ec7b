"""The R1 thought apart from the answer through a live `quantkit serve` and the real `openai` client, on the
scripted model (tests/_fixtures/scripted.py) whose thought and answer are known exactly: both templates (one ends
its generation prompt with `<think>\\n`, one leaves it to the server), streamed and not, greedy and at R1's
temperature, and `--reasoning-format none`."""
from __future__ import annotations

import json

import httpx
import pytest

from tests._fixtures import scripted as S
from tests._fixtures.serve import start

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
N_PROMPT = 12  # BOS, <｜User｜>, "What is 2+2?" (7 tokens), <｜Assistant｜>, <think>, "\n"
SAMPLINGS = {"greedy": {"temperature": 0}, "r1": {"seed": 1234}}  # r1: the server's defaults (0.6, 0.95, 40)


@pytest.fixture(scope="module", params=S.VARIANTS)
def server(request):
    model = request.getfixturevalue({"think": "scripted_gguf", "bare": "scripted_bare_gguf"}[request.param])
    with start(model, "--ctx", "1024", "--parallel", "2", "--threads", "1") as s:
        yield s


@pytest.fixture(scope="module")
def server_none(scripted_bare_gguf):
    with start(scripted_bare_gguf, "--ctx", "1024", "--parallel", "2", "--threads", "1",
               "--reasoning-format", "none") as s:
        yield s


def _sse(server, path: str, body: dict) -> list:
    """Every `data:` payload of a streamed answer, decoded (the last is "[DONE]")."""
    events = []
    with httpx.stream("POST", server.base + path, json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: "):]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
            else:
                assert line == "", line
    return events


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=list(SAMPLINGS))
def test_reasoning_content_apart_not_streamed(server, sampling):
    r = server.openai().chat.completions.create(model="x", messages=QUESTION, **SAMPLINGS[sampling])
    message = r.choices[0].message
    assert message.reasoning_content == S.THOUGHT
    assert message.content == S.ANSWER
    assert message.role == "assistant" and r.choices[0].finish_reason == "stop"
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    u = r.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (N_PROMPT, 23, N_PROMPT + 23)
    assert u.completion_tokens_details.reasoning_tokens == S.REASONING_TOKENS == 14


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=list(SAMPLINGS))
def test_reasoning_content_apart_streamed(server, sampling):
    chunks = list(server.openai().chat.completions.create(
        model="x", messages=QUESTION, stream=True, stream_options={"include_usage": True}, **SAMPLINGS[sampling]))
    first, *middle, last, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content is None
    thought = [c.choices[0].delta.reasoning_content for c in middle if getattr(c.choices[0].delta, "reasoning_content", None)]
    answer = [c.choices[0].delta.content for c in middle if c.choices[0].delta.content]
    assert tuple(thought) == S.THOUGHT_PIECES and tuple(answer) == S.ANSWER_PIECES
    assert last.choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage.completion_tokens_details.reasoning_tokens == 14
    assert usage.usage.prompt_tokens == N_PROMPT and usage.usage.completion_tokens == 23
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)


def test_stream_shape_is_llama_servers(server):
    """The raw events: a role chunk whose content is null, then deltas holding only their non-empty key, a
    finish chunk with an empty delta, the usage chunk with no choices, then [DONE]."""
    events = _sse(server, "/v1/chat/completions", {"messages": QUESTION, "temperature": 0,
                                                   "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    first, *deltas, finish, usage = events[:-1]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert [c["choices"][0]["delta"] for c in deltas] == (
        [{"reasoning_content": t} for t in S.THOUGHT_PIECES] + [{"content": t} for t in S.ANSWER_PIECES])
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *deltas])
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 14, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}


def test_without_include_usage_no_usage_chunk(server):
    events = _sse(server, "/v1/chat/completions", {"messages": QUESTION, "temperature": 0})
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in e for e in events[:-1])


def test_budget_cuts_the_thought(server):
    """max_tokens inside the thought: all of it is reasoning_content, content is empty, finish_reason length;
    max_completion_tokens is the same budget by OpenAI's newer name."""
    client = server.openai()
    for budget in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        r = client.chat.completions.create(model="x", messages=QUESTION, temperature=0, **budget)
        assert r.choices[0].message.reasoning_content == "".join(S.THOUGHT_PIECES[:5])
        assert r.choices[0].message.content == ""
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == r.usage.completion_tokens_details.reasoning_tokens == 5


def test_stop_string_ends_the_answer(server):
    r = server.openai().chat.completions.create(model="x", messages=QUESTION, temperature=0, stop=["\\boxed"])
    assert r.choices[0].message.reasoning_content == S.THOUGHT
    assert r.choices[0].message.content == "The answer is "
    assert r.choices[0].finish_reason == "stop"


def test_earlier_reasoning_is_dropped_from_the_prompt(server):
    """An earlier assistant turn sent back with reasoning_content, or with its thought still in content, gives
    the prompt it gives without them (R1's template cuts `…</think>` itself), so the second request reuses the
    first's cells; a thought that is not cut would make the prompt longer."""
    client = server.openai()
    answer = "\n\n" + S.ANSWER

    def prompt_tokens(assistant: dict) -> tuple[int, int]:
        messages = [*QUESTION, {"role": "assistant", **assistant}, {"role": "user", "content": "And 3+3?"}]
        r = client.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=1)
        return r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens

    plain, _ = prompt_tokens({"content": answer})
    with_reasoning, cached = prompt_tokens({"content": answer, "reasoning_content": "I was thinking " * 50})
    with_tags, _ = prompt_tokens({"content": "<think>\nI was thinking a lot.\n</think>" + answer})
    without_cut, _ = prompt_tokens({"content": "I was thinking a lot." + answer})
    assert plain == with_reasoning == with_tags
    assert cached == plain - 1  # all but the last token came from the slot's cache
    assert without_cut > plain


def test_raw_completion_keeps_the_tags(server):
    """/v1/completions is text in, text out: a prompt ending with <｜Assistant｜> gets the model's own <think>."""
    client = server.openai()
    r = client.completions.create(model="x", prompt="Hi<｜Assistant｜>", temperature=0)
    assert r.choices[0].text == S.RAW_TEXT and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(S.RAW_IDS)
    by_ids = client.completions.create(model="x", prompt=[S.SHORT_IDS[0]], temperature=0)  # token ids: " hello"
    assert by_ids.choices[0].text == S.SHORT_TEXT and by_ids.usage.prompt_tokens == 1
    pieces = [c.choices[0].text for c in client.completions.create(model="x", prompt="Keep going: ping",
                                                                    temperature=0, max_tokens=6, stream=True)]
    assert "".join(pieces) == S.loop_text(6)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_reasoning_format_none_leaves_the_tags_in_content(server_none, stream):
    """The bare template: the server still forces `<think>\\n` into the prompt, so the content starts inside the
    thought and holds `</think>` and the answer, as llama-server's `--reasoning-format none`."""
    client = server_none.openai()
    if stream:
        chunks = list(client.chat.completions.create(model="x", messages=QUESTION, temperature=0, stream=True))
        assert not any(getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks)
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
    else:
        message = client.chat.completions.create(model="x", messages=QUESTION, temperature=0).choices[0].message
        assert getattr(message, "reasoning_content", None) is None
        content = message.content
    assert content == S.TEXT


def test_models_lists_the_file(server):
    models = server.openai().models.list().data
    assert [m.id for m in models] == [f"{S.NAME}-BF16.gguf"] and models[0].owned_by == "quantkit"
    # how the file was made, from its header: a plain BF16 file, no budget mix, no imatrix
    assert models[0].model_dump()["quantkit"] == {"file_type": "BF16", "mix": None, "imatrix": None}


# ---- a thought under control: the reasoning budget, reasoning_effort and the loop guard ------------------------

from quantkit.engine.thinking import BUDGET_MESSAGE  # noqa: E402

N_CLOSING = 16  # BUDGET_MESSAGE's 14 tokens, </think>, "\n\n"
CUT = "".join(S.THOUGHT_PIECES[:5]) + BUDGET_MESSAGE  # the thought with budget 5


@pytest.fixture(scope="module")
def budget_server(scripted_gguf):
    """A server whose default budget is 5, with reasoning_effort low/medium/high = 2/5/100."""
    with start(scripted_gguf, "--ctx", "1024", "--parallel", "2", "--threads", "1", "--reasoning-budget", "5",
               "--reasoning-effort-budgets", "2,5,100") as s:
        yield s


@pytest.fixture(scope="module")
def loop_server(scripted_loop_gguf):
    with start(scripted_loop_gguf, "--ctx", "1024", "--parallel", "2", "--threads", "1") as s:
        yield s


def _chat(server, **body) -> dict:
    r = httpx.post(server.base + "/v1/chat/completions", json={"messages": QUESTION, "temperature": 0, **body},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_per_request_budget_not_streamed(server):
    r = server.openai().chat.completions.create(model="x", messages=QUESTION, extra_body={"reasoning_budget": 5})
    message = r.choices[0].message
    assert (message.reasoning_content, message.content, r.choices[0].finish_reason) == (CUT, S.ANSWER, "stop")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (N_PROMPT, 5 + N_CLOSING + len(S.ANSWER_IDS))
    assert r.usage.completion_tokens_details.reasoning_tokens == 5 + N_CLOSING - 1
    assert r.quantkit == {"forced_tokens": N_CLOSING, "budget_reached": True, "looped": False}


def test_per_request_budget_streamed(server):
    events = _sse(server, "/v1/chat/completions", {"messages": QUESTION, "temperature": 0, "reasoning_budget": 5,
                                                   "stream_options": {"include_usage": True}})
    first, *deltas, finish, usage, done = events
    thought = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in deltas)
    answer = [c["choices"][0]["delta"]["content"] for c in deltas if "content" in c["choices"][0]["delta"]]
    assert thought == CUT and tuple(answer) == S.ANSWER_PIECES
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["quantkit"] == {"forced_tokens": N_CLOSING, "budget_reached": True, "looped": False}
    assert usage["usage"]["completion_tokens"] == 5 + N_CLOSING + 8 and done == "[DONE]"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_budget_zero_answers_at_once(server, stream):
    if stream:
        events = _sse(server, "/v1/chat/completions", {"messages": QUESTION, "temperature": 0,
                                                       "reasoning_budget": 0})
        assert not any("reasoning_content" in e["choices"][0]["delta"] for e in events[1:-2])
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == S.ANSWER
        return
    body = _chat(server, reasoning_budget=0)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": S.ANSWER}  # no reasoning_content
    assert body["usage"]["prompt_tokens"] == N_PROMPT + 3 and body["usage"]["completion_tokens"] == 8


def test_server_default_budget_and_reasoning_effort(budget_server):
    assert _chat(budget_server)["choices"][0]["message"]["reasoning_content"] == CUT  # --reasoning-budget 5
    low = _chat(budget_server, reasoning_effort="low")["choices"][0]["message"]
    assert low["reasoning_content"] == "".join(S.THOUGHT_PIECES[:2]) + BUDGET_MESSAGE
    assert _chat(budget_server, reasoning_effort="medium")["choices"][0]["message"]["reasoning_content"] == CUT
    high = _chat(budget_server, reasoning_effort="high")
    assert high["choices"][0]["message"]["reasoning_content"] == S.THOUGHT and high["quantkit"]["forced_tokens"] == 0
    # reasoning_budget wins over reasoning_effort
    both = _chat(budget_server, reasoning_effort="low", reasoning_budget=100)
    assert both["choices"][0]["message"]["reasoning_content"] == S.THOUGHT


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_loop_guard_ends_the_thought_and_marks_it(loop_server, stream):
    thought = S.loop_thought(S.LOOP_FIRES_AT) + BUDGET_MESSAGE
    if stream:
        events = _sse(loop_server, "/v1/chat/completions", {"messages": QUESTION})
        *_, finish, done = events
        assert "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in events[1:-2]) == thought
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[1:-2]) == S.ANSWER
        assert finish["choices"][0]["finish_reason"] == "stop" and finish["quantkit"]["looped"]
        return
    body = _chat(loop_server)
    assert body["choices"][0]["message"]["reasoning_content"] == thought
    assert body["choices"][0]["message"]["content"] == S.ANSWER and body["choices"][0]["finish_reason"] == "stop"
    assert body["quantkit"] == {"forced_tokens": N_CLOSING, "budget_reached": False, "looped": True}
    assert body["usage"]["completion_tokens"] == S.LOOP_FIRES_AT + N_CLOSING + 8


@pytest.mark.parametrize("body, param, words", [
    ({"reasoning_budget": -1}, "reasoning_budget", "greater than or equal to 0"),
    ({"reasoning_effort": "max"}, "reasoning_effort", "'max' is not one of low, medium, high"),
])
def test_bad_budgets_are_400_in_openais_shape(server, body, param, words):
    r = httpx.post(server.base + "/v1/chat/completions", json={"messages": QUESTION, **body}, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"]
    assert error["code"] == 400 and len(error["message"].splitlines()) == 1
