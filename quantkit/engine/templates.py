"""Chat templates: the Jinja template stored in a GGUF, rendered the way Hugging Face and llama.cpp render it.

Both render with a sandboxed Jinja environment (trim_blocks, lstrip_blocks), the variables `messages`,
`add_generation_prompt`, `bos_token` and `eos_token`, and a `raise_exception` helper. R1-Distill templates also
look at `enable_thinking`: llama.cpp's copy of the Qwen-32B template closes the thought straight away when it is
not set, so it is always passed as true.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from functools import lru_cache

from ..errors import ChatTemplateError
from .reasoning import OPEN

THINK_PROMPT = OPEN + "\n"


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    bos_token: str = ""
    eos_token: str = ""

    @property
    def knows_think(self) -> bool:
        """An R1-style template: it strips `</think>` thoughts and may open the next one itself."""
        return OPEN in self.source or "</think>" in self.source

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages`, as the model's own template writes it."""
        import jinja2

        try:
            return _compile(self.source).render(
                messages=messages, add_generation_prompt=add_generation_prompt, bos_token=self.bos_token,
                eos_token=self.eos_token, enable_thinking=True,
            )
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"the model's chat template failed: {e}") from e

    def prompt(self, messages: list[dict]) -> tuple[str, bool]:
        """The generation prompt and whether it opened a thought. For R1 templates the answer is forced to begin
        with `<think>\\n` (DeepSeek's advice) when the template does not end the prompt with it already."""
        text = self.render(messages, add_generation_prompt=True)
        if not self.knows_think:
            return text, False
        if not text.endswith(THINK_PROMPT):
            text += THINK_PROMPT
        return text, True


def model_template(model) -> ChatTemplate:
    """The chat template stored in a loaded GGUF (a runtime.Model), with the model's BOS and EOS texts."""
    source = model.chat_template_source()
    if not source:
        raise ChatTemplateError(f"{model.path.name} has no chat template (tokenizer.chat_template)")
    return ChatTemplate(source, bos_token=model.special_text(model.bos), eos_token=model.special_text(model.eos))


@lru_cache(maxsize=8)
def _compile(source: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    # Hugging Face's `tojson`: a plain string. Jinja's own returns HTML-safe Markup, which escapes whatever text
    # it is joined to (R1's template writes '<｜Assistant｜>…' + arguments|tojson: the tags came out as &lt;…).
    env.filters["tojson"] = _tojson
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the model's chat template does not parse: {e}") from e


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
