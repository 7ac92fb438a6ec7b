"""Messages (or a raw prompt) → the engine's request: the one path from what a caller says to what the engine
generates. chat, serve and eval all build their prompts here, so the template, the forced `<think>\\n`, the
tokenization and the context check are the same for every caller; every caller gets a GenerationResult back.

    prompt = chat_prompt(engine, [{"role": "user", "content": "What is 2+2?"}])
    stream = engine.submit(prompt.request(Sampling(), max_tokens=512))
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ContextFullError, InvalidArgumentError
from ..models import MATH_INSTRUCTION
from ..runtime import Sampling
from .request import GenerationRequest
from .thinking import EMPTY_THOUGHT, Thinking

__all__ = ["MATH_INSTRUCTION", "Prompt", "chat_prompt", "raw_prompt", "user_message"]


@dataclass(frozen=True)
class Prompt:
    """A prompt as the engine takes it, and how much of the sequence's context it leaves to generate."""

    tokens: list[int]
    opened_thought: bool  # the template ended the prompt with `<think>\n`: the thought is already open
    n_ctx_seq: int  # the most tokens one sequence may hold (prompt and generation)
    chat: bool = True  # rendered through the chat template (a raw completion prompt is not)
    empty_thought: tuple[int, ...] = ()  # the tokens that close the opened thought at once (budget 0)

    @property
    def room(self) -> int:
        """Tokens left for the generation."""
        return self.n_ctx_seq - len(self.tokens)

    def request(self, sampling: Sampling = Sampling(), max_tokens: int | None = None, *, stop: Sequence[str] = (),
                split_reasoning: bool = True, fit_context: bool = False, thinking: Thinking = Thinking(),
                logprobs: int | None = None) -> GenerationRequest:
        """The engine's request. `fit_context`: `max_tokens` is capped by the room the prompt leaves (a
        generation then ends as "length", not "context"); a prompt that leaves no room is an error either way.
        `thinking`: the thought's budget and loop guard; with budget 0 an opened thought is closed in the prompt
        (`<think>\n\n</think>\n\n`), so that the model answers straight away. `logprobs`: report each sampled
        token's log-probability and this many alternatives."""
        tokens, opened = self.tokens, self.opened_thought
        if thinking.budget == 0 and opened and self.empty_thought:
            tokens, opened = [*tokens, *self.empty_thought], False
        room = self.n_ctx_seq - len(tokens)
        if room < 1:
            raise ContextFullError(f"the prompt needs {len(tokens)} tokens, the context holds {self.n_ctx_seq}",
                                   param="n_ctx")
        if fit_context:
            max_tokens = room if max_tokens is None else min(max_tokens, room)
        return GenerationRequest(tokens, sampling, max_tokens, stop=tuple(stop), opened_thought=opened,
                                 split_reasoning=split_reasoning and self.chat, thinking=thinking,
                                 logprobs=logprobs)


def user_message(text: str, math: bool = False) -> dict:
    """One user turn, DeepSeek's way: everything in the user message, the math instruction after the problem."""
    return {"role": "user", "content": f"{text}\n{MATH_INSTRUCTION}" if math else text}


def chat_prompt(engine, messages: list[dict], template=None) -> Prompt:
    """The conversation rendered with the model's own template (engine.template, or `template`) and tokenized;
    whether the template opened the thought is kept with it. ChatTemplateError when there is no usable one."""
    text, opened = (template or engine.template).prompt(messages)
    model = engine.model
    empty = model.tokenize(EMPTY_THOUGHT.encode(), add_special=False, parse_special=True).tolist() if opened else []
    return Prompt(model.prompt_tokens(text).tolist(), opened, engine.n_ctx_seq, empty_thought=tuple(empty))


def raw_prompt(engine, prompt: str | list[int]) -> Prompt:
    """A completion prompt: text (BOS added as the model wants) or token ids, checked against the vocabulary
    (libllama would abort the whole process on an id outside it)."""
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        n_vocab = engine.model.n_vocab
        bad = [t for t in prompt if not 0 <= t < n_vocab]
        if bad:
            raise InvalidArgumentError(f"token id {bad[0]} is not in the vocabulary (0 to {n_vocab - 1})",
                                       param="prompt")
        return Prompt(list(prompt), False, engine.n_ctx_seq, chat=False)
    text = prompt[0] if isinstance(prompt, list) else prompt
    return Prompt(engine.model.prompt_tokens(text).tolist(), False, engine.n_ctx_seq, chat=False)
