"""Streaming chat with a GGUF model, its `<think>` reasoning kept apart from the answer, the way DeepSeek advises
for R1 models: temperature 0.6, top-p 0.95, no system prompt, the model's own template, the answer forced to
begin with `<think>\\n`, and earlier thoughts dropped from the history. It generates on the engine (one sequence).

    with ChatSession.open("model.gguf", n_ctx=8192) as chat:
        for piece in chat.send("What is 2+2?"):      # Piece(kind="thought"|"answer", text)
            ...
        turn = chat.turns[-1]                         # the answer, the thought and the turn's numbers

The library returns data and never prints: the CLI decides how to show it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Engine, GenerationResult
from .engine.prompt import chat_prompt, user_message
from .engine.reasoning import Piece
from .engine.templates import ChatTemplate
from .engine.thinking import Thinking
from .errors import ContextFullError, InvalidArgumentError, ModelNotFoundError
from .models import MATH_INSTRUCTION
from .resources import Closeable
from .runtime import Sampling

__all__ = ["ChatSession", "Conversation", "MATH_INSTRUCTION", "Sampling", "Thinking", "Turn", "find_model_file",
           "transcript", "turn_summary"]


def turn_summary(r: GenerationResult) -> dict:
    """The documented JSON of a turn (`chat --json`, the job's chat step)."""
    return {"reasoning": r.reasoning, "answer": r.answer, "prompt_tokens": r.prompt_tokens,
            "reasoning_tokens": r.reasoning_tokens, "answer_tokens": r.answer_tokens, "prompt_tps": r.prompt_tps,
            "gen_tps": r.gen_tps, "finish_reason": r.finish_reason, "forced_tokens": r.forced_tokens,
            "budget_reached": r.budget_reached, "looped": r.looped, "prompt_eval_tokens": r.prompt_eval_tokens,
            "drafted_tokens": r.drafted_tokens, "accepted_tokens": r.accepted_tokens}


@dataclass
class Turn:
    user: str
    result: GenerationResult = field(default_factory=GenerationResult)


def find_model_file(model: str, quant_type: str | None = None, folder: Path = Path(".")) -> Path:
    """MODEL as given to `chat`: a GGUF path, or a family label / repo id plus a quant type naming a file
    `<Name>-<TYPE>.gguf` that `quantkit convert` wrote into `folder` earlier."""
    from .quantize.ladder import output_name
    from .models import find_model

    path = Path(model)
    if path.exists() or path.suffix == ".gguf" or (member := find_model(model)) is None:
        return path  # load_model reports a missing or non-GGUF file
    quant = (quant_type or "Q4_K_M").upper()
    made = folder / output_name(member.name, quant)
    if made.exists():
        return made
    raise ModelNotFoundError(f"no {quant} GGUF of {member.repo_id} found ({made} does not exist)",
                             hint=f"make it with `quantkit convert {member.label} -t {quant}`, then pass its path")


# ---- the session --------------------------------------------------------------------------------------------

class Conversation:
    """The history of a chat and how it becomes a prompt: the model's template, an optional system prompt, the
    math instruction, and each earlier turn with its thought removed. Rendering needs no loaded weights."""

    def __init__(self, template: ChatTemplate | None, system: str | None = None, math: bool = False):
        self.template = template
        self.system = system
        self.math = math
        self.turns: list[Turn] = []

    def messages(self, turns: list[Turn] | None = None, user: str | None = None) -> list[dict]:
        """The messages the template sees: the system prompt if any, each earlier turn with its thought removed,
        and the new user message."""
        out: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns if turns is None else turns:
            out.append(user_message(turn.user, self.math))
            out.append({"role": "assistant", "content": turn.result.history_text})
        if user is not None:
            out.append(user_message(user, self.math))
        return out

    @property
    def thinks(self) -> bool:
        """The template is an R1 one: the thought, its budget and its loop guard mean something."""
        return self.template.knows_think

    def render(self, user: str) -> tuple[str, bool]:
        """The prompt text for a new user message after the history, and whether it opens a thought."""
        return self.template.prompt(self.messages(user=user))


class ChatSession(Conversation, Closeable):
    """A conversation with one loaded model, generated on an engine sequence that keeps its KV cache between
    turns."""

    def __init__(self, engine: Engine, sampling: Sampling = Sampling(), system: str | None = None,
                 math: bool = False, template: ChatTemplate | None = None, thinking: Thinking = Thinking()):
        super().__init__(template or engine.template, system, math)
        self.engine = engine
        self.model = engine.model
        self.sampling = sampling
        self.thinking = thinking  # the reasoning budget and the loop guard of every turn
        self._owns: Engine | None = None

    @classmethod
    def open(cls, path: str | Path, n_ctx: int = 8192, n_gpu_layers: int | str = "auto", threads: int | None = None,
             n_batch: int = 2048, rpc: list[str] | None = None, speculation=None, **kwargs) -> "ChatSession":
        """Load `path` on an engine of one sequence and `n_ctx` tokens, capped by the model's training context
        (offloading to the RPC servers `rpc` too; `speculation`: engine.speculative.Speculation)."""
        engine = Engine.open(path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_parallel=1, threads=threads,
                             n_batch=n_batch, rpc=rpc, speculation=speculation)
        try:
            session = cls(engine, **kwargs)
        except BaseException:
            engine.close()
            raise
        session._owns = engine
        return session

    # -- what the CLI shows ---------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx_seq

    @property
    def threads(self) -> int:
        return self.engine.context.threads

    @property
    def tokens_used(self) -> int:
        """Tokens of the conversation in the context after the last turn (an interrupted turn frees them)."""
        if not self.turns or self.turns[-1].result.finish_reason == "interrupted":
            return 0
        r = self.turns[-1].result
        return r.prompt_tokens + r.gen_tokens

    # -- conversation -----------------------------------------------------------------------------------------

    def send(self, user: str, max_tokens: int | None = None) -> Iterator[Piece]:
        """Generate the reply to `user`, yielding thought and answer pieces as they come. The finished turn
        (also an interrupted one: Ctrl-C, or the caller closing the generator) is `self.turns[-1]`."""
        if max_tokens is not None and max_tokens < 1:
            raise InvalidArgumentError(f"--n-predict must be ≥ 1, not {max_tokens}", param="max_tokens")
        prompt = chat_prompt(self.engine, self.messages(user=user), self.template)
        stream = self.engine.submit(prompt.request(self.sampling, max_tokens, thinking=self.thinking))  # ContextFullError before the turn
        turn = Turn(user)
        self.turns.append(turn)
        try:
            yield from stream
        finally:
            result = stream.wait()
            if result.finish_reason == "cancelled":  # Ctrl-C, or the caller closed the generator
                result = dataclasses.replace(result, finish_reason="interrupted")
            turn.result = result

    def regenerate(self, max_tokens: int | None = None) -> Iterator[Piece]:
        """Drop the last reply and generate it again."""
        if not self.turns:
            raise InvalidArgumentError("there is no turn to regenerate yet")
        last = self.turns.pop()
        try:
            yield from self.send(last.user, max_tokens)
        except ContextFullError:
            self.turns.append(last)
            raise

    def clear(self) -> None:
        """Forget the conversation (the engine reuses or frees its cells as the next prompt needs)."""
        self.turns.clear()

    # -- lifetime ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns is not None:
            self._owns.close()
            self._owns = None


def transcript(turns: list[Turn], title: str) -> str:
    """A Markdown transcript: each user message, the thought folded away, the answer."""
    lines = [f"# {title}", ""]
    for turn in turns:
        r = turn.result
        lines += ["## User", "", turn.user, "", "## Assistant", ""]
        if r.reasoning.strip():
            lines += [f"<details><summary>Thought ({r.reasoning_tokens} tokens)</summary>", "", r.reasoning.strip(),
                      "", "</details>", ""]
        lines += [r.answer.strip() or "*(no answer)*", ""]
        if r.finish_reason != "stop":
            lines += [f"*(stopped: {r.finish_reason})*", ""]
    return "\n".join(lines)
