"""Tool calls in DeepSeek-R1's markup through a live `quantkit serve` and the real `openai` client, on the scripted
R1 model (whose own script has no calls: "required" and a named function make the grammar write them, after the
model's free thought) — message.tool_calls, streamed delta.tool_calls, finish_reason "tool_calls", tool results
fed back through the template; a template without tool markup (SmolLM2) is a 400."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from quantkit.engine.templates import model_template
from quantkit.runtime import load_vocabulary
from quantkit.serve import tools as T
from quantkit.serve.schemas import ChatCompletionRequest
from tests._fixtures import scripted as S
from tests._fixtures.serve import start

WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}, "days": {"type": "integer"}},
           "required": ["city", "days"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
             "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}]
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(scripted_gguf):
    with start(scripted_gguf, "--ctx", "4096", "--threads", "1") as s:
        yield s


def _ask(server, **kwargs):
    return server.openai().chat.completions.create(model="x", messages=kwargs.pop("messages", USER), tools=TOOLS,
                                                   temperature=0, max_tokens=300, **kwargs)


def test_required_gives_a_tool_call_after_the_free_thought(server):
    choice = _ask(server, tool_choice="required").choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.reasoning_content == S.THOUGHT
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    schema = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_a_named_function_is_the_one_called(server):
    choice = _ask(server, tool_choice={"type": "function", "function": {"name": "get_time"}}).choices[0]
    assert [c.function.name for c in choice.message.tool_calls] == ["get_time"]
    assert json.loads(choice.message.tool_calls[0].function.arguments)["zone"] in ("UTC", "CET")


def test_streamed_tool_calls(server):
    chunks = [c for chunk in _ask(server, tool_choice="required", stream=True) for c in chunk.choices]
    calls = [call for c in chunks for call in (c.delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name in ("get_weather", "get_time") and calls[0].index == 0
    assert not "".join(c.delta.content or "" for c in chunks)
    assert "".join(getattr(c.delta, "reasoning_content", None) or "" for c in chunks) == S.THOUGHT
    assert chunks[-1].finish_reason == "tool_calls"


def test_auto_lets_the_model_answer(server):
    choice = _ask(server, tool_choice="auto").choices[0]
    assert choice.message.content == S.ANSWER and choice.message.tool_calls is None
    assert choice.finish_reason == "stop"


def test_tool_results_go_back_through_the_template(server, scripted_gguf):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                            "arguments": '{"city": "Paris", "days": 1}'}}
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 °C"}]
    choice = _ask(server, messages=messages).choices[0]
    assert choice.message.content == S.ANSWER  # the scripted model answers whatever the prompt
    body = ChatCompletionRequest.model_validate({"messages": messages, "tools": TOOLS})
    with load_vocabulary(scripted_gguf) as vocab:
        template = model_template(vocab)
    prompt, _ = template.prompt(T.template_messages(body.messages, T.tool_set(body, template)))
    assert (f"{T.CALLS_BEGIN}{T.CALL_BEGIN}function{T.SEP}get_weather\n```json\n"
            '{"city": "Paris", "days": 1}\n```' + T.CALL_END) in prompt
    assert f"{T.OUTPUTS_BEGIN}<｜tool▁output▁begin｜>sunny, 21 °C<｜tool▁output▁end｜>" in prompt
    assert '"name": "get_time"' in prompt.split("<｜User｜>")[0]  # the tools described in the system prompt


def test_parallel_tool_calls_false_allows_one_call():
    body = ChatCompletionRequest.model_validate({"messages": USER, "tools": TOOLS, "parallel_tool_calls": False})

    class Template:
        source = T.CALLS_BEGIN

    one = T.grammar(T.tool_set(body, Template()), after=None).gbnf.splitlines()[0]
    body = ChatCompletionRequest.model_validate({"messages": USER, "tools": TOOLS})
    many = T.grammar(T.tool_set(body, Template()), after=None).gbnf.splitlines()[0]
    assert "call)*" in many and "call)*" not in one


def test_parse_calls_unwraps_arguments_quoted_twice():
    text = (f"Let me check.{T.CALLS_BEGIN}{T.CALL_BEGIN}function{T.SEP}get_weather\n```json\n"
            f'"{{\\"city\\": \\"Rome\\"}}"\n```{T.CALL_END}{T.CALLS_END}')
    content, calls = T.parse_calls(text)
    assert content == "Let me check." and json.loads(calls[0]["function"]["arguments"]) == {"city": "Rome"}


def test_a_template_without_tool_markup_is_400(smollm2_gguf):
    with start(smollm2_gguf, "--ctx", "512", "--threads", "1") as s:
        with pytest.raises(openai.BadRequestError) as e:
            s.openai().chat.completions.create(model="x", messages=USER, tools=TOOLS)
    assert e.value.body["param"] == "tools" and "no tool-call markup" in e.value.body["message"]


def test_tools_and_a_response_format_are_400(server):
    with pytest.raises(openai.BadRequestError, match="response_format"):
        _ask(server, response_format={"type": "json_object"})
