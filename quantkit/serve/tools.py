"""Tool calls in DeepSeek-R1's markup, the one the R1-Distill chat templates write for earlier assistant turns
(and llama.cpp parses for them):

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
    ```json
    {"arg": …}
    ```<｜tool▁call▁end｜>
    <｜tool▁call▁begin｜>…<｜tool▁call▁end｜><｜tool▁calls▁end｜>

The template renders earlier calls and `tool` results but not the tool definitions, so these go in the system
prompt with the markup to answer in. A grammar holds the calls to the markup, the names offered and each tool's
parameter schema: with `tool_choice` "auto" it waits until the model opens a call; with "required" or a named
function the answer after the thought must be calls. `parallel_tool_calls: false` allows one call. A template
without this markup cannot take tools: 400.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from ..engine.reasoning import partial_suffix
from ..runtime import Grammar
from ..runtime.grammar import LEAD, json_rules, literal
from .errors import APIError

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
OUTPUTS_BEGIN = "<｜tool▁outputs▁begin｜>"
_CALL = re.compile(re.escape(CALL_BEGIN) + r"\w+" + re.escape(SEP) + r"([^\n]*)\n```(?:json)?\n(.*?)\n```"
                   + re.escape(CALL_END), re.DOTALL)

SYSTEM = """You can call the tools below. To call one or more of them, answer with nothing but:
{begin}{call}function{sep}TOOL_NAME
```json
ARGUMENTS AS A JSON OBJECT
```{call_end}{end}
The tools (name, description, JSON schema of the arguments):
{tools}"""


@dataclass(frozen=True)
class ToolSet:
    """The tools a request offers and how they may be called."""

    functions: tuple[dict, ...]  # OpenAI's {"name", "description", "parameters"}
    choice: str  # "auto", "required", or the one function's name
    parallel: bool = True

    @property
    def names(self) -> list[str]:
        return [f["name"] for f in self.functions] if self.choice in ("auto", "required") else [self.choice]


def tool_set(body, template) -> ToolSet | None:
    """The request's tools, or None when it offers none (or tool_choice is "none"); 400 when the model's
    template has no tool markup, or the choice names a tool not offered."""
    if not body.tools or body.tool_choice == "none":
        return None
    if CALLS_BEGIN not in template.source:
        raise APIError(400, "tools: the model's chat template has no tool-call markup (DeepSeek-R1's "
                            f"{CALLS_BEGIN}…): this model cannot be given tools", param="tools")
    functions = tuple(t.function.model_dump(exclude_none=True) for t in body.tools)
    choice = body.tool_choice or "auto"
    if not isinstance(choice, str):
        choice = choice.function.name
        if choice not in [f["name"] for f in functions]:
            raise APIError(400, f"tool_choice: {choice!r} is not one of the tools", param="tool_choice")
    return ToolSet(functions, choice, body.parallel_tool_calls is not False)


def system_prompt(tools: ToolSet, system: str | None) -> str:
    listed = "\n".join(json.dumps({k: f[k] for k in ("name", "description", "parameters") if k in f},
                                  ensure_ascii=False) for f in tools.functions if f["name"] in tools.names)
    text = SYSTEM.format(begin=CALLS_BEGIN, call=CALL_BEGIN, sep=SEP, call_end=CALL_END, end=CALLS_END,
                         tools=listed)
    return f"{system}\n\n{text}" if system else text


def template_messages(messages, tools: ToolSet | None) -> list[dict]:
    """The chat messages as the template takes them: tool calls with their arguments as objects (the R1
    template writes them with `tojson`), tool results, the tools described in the system prompt."""
    out = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        item = {"role": role, "content": m.text}
        if m.role == "assistant" and m.tool_calls:
            item["content"] = m.text or None  # the template writes an answer only when there is content
            item["tool_calls"] = [{"type": "function", "id": c.id, "function": {
                "name": c.function.name, "arguments": _arguments(c.function.arguments)}} for c in m.tool_calls]
        out.append(item)
    if tools is not None:
        systems = [m for m in out if m["role"] == "system"]
        system = system_prompt(tools, systems[-1]["content"] if systems else None)
        out = [{"role": "system", "content": system}, *(m for m in out if m["role"] != "system")]
    return out


def _arguments(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def grammar(tools: ToolSet, after: str | None) -> Grammar:
    """The grammar of the calls. "auto": a lazy grammar that waits for the model to open the calls; otherwise
    the answer (after `after`, the end of the thought, when the prompt opened one) must be calls."""
    schemas = {f"args-{i}": f.get("parameters") or {"type": "object"}
               for i, f in enumerate(tools.functions) if f["name"] in tools.names}
    rules = json_rules(schemas, param="tools")
    names = [f["name"] for f in tools.functions if f["name"] in tools.names]
    calls = " | ".join(f'{literal(CALL_BEGIN + "function" + SEP + name + chr(10) + "```json" + chr(10))} '
                       f'args-{[f["name"] for f in tools.functions].index(name)} '
                       f'{literal(chr(10) + "```" + CALL_END)}' for name in names)
    more = f' ({literal(chr(10))} call)*' if tools.parallel else ""
    body = f'{literal(CALLS_BEGIN)} call{more} {literal(CALLS_END)}'
    if tools.choice == "auto":
        return Grammar(f"root ::= {body}\ncall ::= {calls}\n{rules}", trigger=CALLS_BEGIN)
    start = f"{literal(after)} {LEAD} " if after else ""
    return Grammar(f"root ::= {start}{body}\ncall ::= {calls}\n{rules}", trigger=after)


def parse_calls(text: str) -> tuple[str, list[dict]]:
    """(the answer before the calls, the calls in OpenAI's shape) of an answer; no calls: (text, [])."""
    if CALLS_BEGIN not in text:
        return text, []
    before, _, rest = text.partition(CALLS_BEGIN)
    calls = []
    for m in _CALL.finditer(rest):
        arguments = m.group(2).strip()
        try:
            value = json.loads(arguments)
            if isinstance(value, str):  # the template's `tojson` of a string: arguments quoted once more
                value = json.loads(value)
            arguments = json.dumps(value, ensure_ascii=False)
        except ValueError:
            pass  # handed over as the model wrote them
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": m.group(1).strip(), "arguments": arguments}})
    return before.rstrip(), calls


class CallFilter:
    """Streams the answer's text up to the calls (holding back what could be the start of CALLS_BEGIN); the
    calls themselves are parsed once the generation ended."""

    def __init__(self):
        self.text = ""
        self.sent = 0
        self.in_calls = False

    def feed(self, piece: str) -> str:
        self.text += piece
        if self.in_calls:
            return ""
        if CALLS_BEGIN in self.text:
            self.in_calls = True
            end = self.text.index(CALLS_BEGIN)
        else:
            end = len(self.text) - partial_suffix(self.text, [CALLS_BEGIN])
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out

    def flush(self) -> str:
        if self.in_calls:
            return ""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out
