"""Streaming chat with a GGUF model, its `<think>` reasoning kept apart from the answer, the way DeepSeek advises
for R1 models: temperature 0.6, top-p 0.95, no system prompt, the model's own template, the answer forced to
begin with `<think>\\n`, and earlier thoughts dropped from the history.

    with ChatSession.open("model.gguf", n_ctx=8192) as chat:
        for piece in chat.send("What is 2+2?"):      # Piece(kind="thought"|"answer", text)
            ...
        turn = chat.turns[-1]                         # the answer, the thought and the turn's numbers

The library returns data and never prints: the CLI decides how to show it.
"""
from __future__ import annotations

import codecs
import ctypes
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import runtime
from .errors import ChatTemplateError, ContextFullError, InvalidArgumentError, ModelNotFoundError
from .reasoning import CLOSE, Piece, ReasoningSplitter
from .templates import ChatTemplate

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# Why a turn ended: the model's end-of-generation token, the --n-predict budget, a full context, or Ctrl-C.
FINISH_REASONS = ("stop", "length", "context", "interrupted")


@dataclass(frozen=True)
class Sampling:
    """DeepSeek's R1 settings (temperature 0.6, top-p 0.95) by default, after llama.cpp's and Ollama's top-k of 40:
    at temperature 0.6 the 0.95 nucleus is nearly always smaller (over 40 tokens in 3 of 1,221 steps of SmolLM2,
    at most 54), and sorting 40 candidates instead of the whole vocabulary saves ~0.4 ms a token. `top_k=0`
    keeps every token."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise InvalidArgumentError(f"--temperature must be ≥ 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidArgumentError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            raise InvalidArgumentError(f"--top-k must be ≥ 0, not {self.top_k}")


@dataclass
class TurnResult:
    """One assistant turn and its numbers. `reasoning_tokens + answer_tokens` are the generated tokens (the
    end-of-generation token not counted); `prompt_tps` counts only the prompt tokens that had to be evaluated
    (a prefix still in the KV cache from the previous turn is reused)."""

    reasoning: str = ""
    answer: str = ""
    text: str = ""  # everything generated, tags included
    prompt_tokens: int = 0
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    prompt_tps: float = 0.0
    gen_tps: float = 0.0
    finish_reason: str = "stop"
    thought_unfinished: bool = False  # a thought was opened and never closed (budget, context or Ctrl-C)
    prompt_eval_tokens: int = 0
    prompt_seconds: float = 0.0
    gen_seconds: float = 0.0

    @property
    def gen_tokens(self) -> int:
        return self.reasoning_tokens + self.answer_tokens

    @property
    def history_text(self) -> str:
        """What the next prompt keeps of this turn: the text after `</think>`, as the R1 template cuts it (it
        keeps the blank lines the model wrote after the tag); nothing of a thought that never closed."""
        if CLOSE in self.text:
            return self.text.split(CLOSE)[-1]
        return "" if self.thought_unfinished else self.text

    def summary(self) -> dict:
        """The documented JSON of a turn."""
        keys = ("reasoning", "answer", "prompt_tokens", "reasoning_tokens", "answer_tokens", "prompt_tps",
                "gen_tps", "finish_reason")
        return {k: getattr(self, k) for k in keys}


@dataclass
class Turn:
    user: str
    result: TurnResult = field(default_factory=TurnResult)


def find_model_file(model: str, quant_type: str | None = None, folder: Path = Path(".")) -> Path:
    """MODEL as given to `chat`: a GGUF path, or a family label / repo id plus a quant type naming a file
    `<Name>-<TYPE>.gguf` that `quantkit convert` wrote into `folder` earlier."""
    from .models import find_model

    path = Path(model)
    if path.exists() or path.suffix == ".gguf" or (member := find_model(model)) is None:
        return path  # load_model reports a missing or non-GGUF file
    quant = (quant_type or "Q4_K_M").upper()
    made = folder / f"{member.name}-{quant}.gguf"
    if made.exists():
        return made
    raise ModelNotFoundError(f"no {quant} GGUF of {member.repo_id} found ({made} does not exist)",
                             hint=f"make it with `quantkit convert {member.label} -t {quant}`, then pass its path")


# ---- small libllama helpers (they belong in runtime.py; kept here until it has them) -------------------------

def token_text(model: runtime.Model, token: int, special: bool = False) -> bytes:
    """The bytes of one token (special tokens rendered only when `special`)."""
    llama_cpp = runtime._llama_cpp()
    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(model.vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(model.vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]


def model_template(model: runtime.Model) -> ChatTemplate:
    """The chat template stored in the GGUF, with the model's BOS and EOS texts."""
    llama_cpp = runtime._llama_cpp()
    source = llama_cpp.llama_model_chat_template(model.ptr, None)
    if not source:
        raise ChatTemplateError(f"{model.path.name} has no chat template (tokenizer.chat_template)")
    eos = int(llama_cpp.llama_vocab_eos(model.vocab))
    return ChatTemplate(
        source.decode("utf-8", errors="replace"),
        bos_token=token_text(model, model.bos, special=True).decode("utf-8", "replace") if model.bos >= 0 else "",
        eos_token=token_text(model, eos, special=True).decode("utf-8", "replace") if eos >= 0 else "",
    )


def prompt_tokens(model: runtime.Model, text: str) -> np.ndarray:
    """The tokens of a rendered prompt: special tokens parsed, and BOS exactly once where the vocabulary wants
    it (templates that write `bos_token` themselves must not get a second one)."""
    tokens = model.tokenize(text.encode("utf-8"), add_special=False, parse_special=True)
    if model.add_bos and model.bos >= 0 and (len(tokens) == 0 or tokens[0] != model.bos):
        tokens = np.concatenate([np.array([model.bos], dtype=np.int32), tokens])
    return tokens


# ---- the session --------------------------------------------------------------------------------------------

class ChatSession:
    """A conversation with one loaded model: its history, its KV cache and its sampler."""

    def __init__(self, model: runtime.Model, context: runtime.Context, sampling: Sampling = Sampling(),
                 system: str | None = None, math: bool = False, template: ChatTemplate | None = None):
        self.model = model
        self.context = context
        self.sampling = sampling
        self.system = system
        self.math = math
        self.template = template or model_template(model)
        self.turns: list[Turn] = []
        self._cached: list[int] = []  # the tokens whose keys and values sit in the KV cache, in order
        self._sampler = self._make_sampler()
        self._eog = runtime._llama_cpp().llama_vocab_is_eog
        self._owns: tuple = ()

    @classmethod
    def open(cls, path: str | Path, n_ctx: int = 8192, n_gpu_layers: int | str = "auto", threads: int | None = None,
             n_batch: int = 2048, **kwargs) -> "ChatSession":
        """Load `path` and make a context of `n_ctx` tokens, capped by the model's training context."""
        model = runtime.load_model(path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx)
        try:
            n_ctx = min(n_ctx, model.n_ctx_train) if model.n_ctx_train > 0 else n_ctx
            context = runtime.create_context(model, n_ctx=n_ctx, n_batch=n_batch, threads=threads)
            session = cls(model, context, **kwargs)
        except BaseException:
            model.close()
            raise
        session._owns = (context, model)
        return session

    # -- what the CLI shows ---------------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    @property
    def tokens_used(self) -> int:
        """Tokens of the conversation in the context after the last turn."""
        return len(self._cached)

    def messages(self, turns: list[Turn] | None = None, user: str | None = None) -> list[dict]:
        """The messages the template sees: the system prompt if any, each earlier turn with its thought removed,
        and the new user message."""
        out: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns if turns is None else turns:
            out.append({"role": "user", "content": self._user_content(turn.user)})
            out.append({"role": "assistant", "content": turn.result.history_text})
        if user is not None:
            out.append({"role": "user", "content": self._user_content(user)})
        return out

    def _user_content(self, text: str) -> str:
        return f"{text}\n{MATH_INSTRUCTION}" if self.math else text

    def render(self, user: str) -> tuple[str, bool]:
        """The prompt text for a new user message after the history, and whether it opens a thought."""
        return self.template.prompt(self.messages(user=user))

    # -- conversation -----------------------------------------------------------------------------------------

    def send(self, user: str, max_tokens: int | None = None) -> Iterator[Piece]:
        """Generate the reply to `user`, yielding thought and answer pieces as they come. The finished turn
        (also an interrupted one: Ctrl-C, or the caller closing the generator) is `self.turns[-1]`."""
        if max_tokens is not None and max_tokens < 1:
            raise InvalidArgumentError(f"--n-predict must be ≥ 1, not {max_tokens}")
        text, opened = self.render(user)
        tokens = prompt_tokens(self.model, text)
        if len(tokens) >= self.n_ctx:
            raise ContextFullError(f"the conversation needs {len(tokens)} tokens, the context holds {self.n_ctx}")
        turn = Turn(user)
        self.turns.append(turn)
        yield from self._generate(tokens, opened, turn.result, max_tokens)

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
        """Forget the conversation (and empty the KV cache)."""
        self.turns.clear()
        self._cached = []
        self.context.clear()

    def _generate(self, tokens: np.ndarray, opened: bool, result: TurnResult, max_tokens: int | None
                  ) -> Iterator[Piece]:
        llama_cpp = runtime._llama_cpp()
        ctx = self.context
        splitter = ReasoningSplitter(in_thought=opened)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        result.prompt_tokens = len(tokens)
        n_gen, close_at, finish = 0, None, "interrupted"
        generated: list[str] = []
        t_gen = None
        try:
            t0 = time.perf_counter()
            result.prompt_eval_tokens = self._evaluate_prompt(tokens)
            llama_cpp.llama_synchronize(ctx.ptr)
            t_gen = time.perf_counter()
            result.prompt_seconds = t_gen - t0
            one = runtime.Batch(1)
            try:
                while True:
                    if max_tokens is not None and n_gen >= max_tokens:
                        finish = "length"
                        break
                    if len(self._cached) >= ctx.n_ctx:
                        finish = "context"
                        break
                    token = llama_cpp.llama_sampler_sample(self._sampler, ctx.ptr, -1)
                    if self._eog(self.model.vocab, token):
                        finish = "stop"
                        break
                    n_gen += 1
                    generated.append(decoder.decode(token_text(self.model, token)))
                    pieces = splitter.feed(generated[-1])
                    if close_at is None and splitter.saw_close:
                        close_at = n_gen
                    self._decode_one(one, token)
                    yield from pieces
                generated.append(decoder.decode(b"", final=True))
                pieces = splitter.feed(generated[-1]) + splitter.finish()
                yield from pieces
            finally:
                one.close()
        finally:
            if finish == "interrupted":
                self._cached = []  # the cache may be mid-update: evaluate the whole prompt next turn
                ctx.clear()
                splitter.finish()
            t_end = time.perf_counter()
            result.reasoning, result.answer = splitter.thought, splitter.answer
            result.text = "".join(generated)
            result.finish_reason = finish
            result.thought_unfinished = splitter.thought_unfinished
            if close_at is not None:
                result.reasoning_tokens, result.answer_tokens = close_at, n_gen - close_at
            elif splitter.thought_unfinished or (opened and not splitter.answer):
                result.reasoning_tokens, result.answer_tokens = n_gen, 0
            else:
                result.reasoning_tokens, result.answer_tokens = 0, n_gen
            if result.prompt_seconds > 0:
                result.prompt_tps = result.prompt_eval_tokens / result.prompt_seconds
            if t_gen is not None:
                result.gen_seconds = t_end - t_gen
                result.gen_tps = n_gen / result.gen_seconds if n_gen and result.gen_seconds > 0 else 0.0

    def _evaluate_prompt(self, tokens: np.ndarray) -> int:
        """Decode the prompt, reusing the part of it already in the KV cache; returns the tokens evaluated."""
        llama_cpp = runtime._llama_cpp()
        ctx = self.context
        cached = np.asarray(self._cached, dtype=np.int32)
        n = min(len(cached), len(tokens))
        keep = int(np.argmin(cached[:n] == tokens[:n])) if n and not (cached[:n] == tokens[:n]).all() else n
        keep = min(keep, len(tokens) - 1)  # the last prompt token is always evaluated: its logits start the reply
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx.ptr), 0, keep, -1)
        self._cached = self._cached[:keep]
        todo = tokens[keep:]
        with runtime.Batch(min(ctx.n_batch, len(todo))) as batch:
            for start in range(0, len(todo), ctx.n_batch):
                chunk = todo[start:start + ctx.n_batch]
                pos = np.arange(keep + start, keep + start + len(chunk), dtype=np.int32)
                outputs = np.zeros(len(chunk), dtype=bool)
                outputs[-1] = start + len(chunk) == len(todo)
                batch.set(chunk, pos, np.zeros(len(chunk), dtype=np.int32), outputs)
                ctx.decode(batch)
                self._cached.extend(chunk.tolist())
        return len(todo)

    def _decode_one(self, batch: runtime.Batch, token: int) -> None:
        raw = batch.raw  # filled by hand: this runs once per generated token
        raw.token[0] = token
        raw.pos[0] = len(self._cached)
        raw.n_seq_id[0] = 1
        raw.seq_id[0][0] = 0
        raw.logits[0] = 1
        raw.n_tokens = 1
        self.context.decode(batch)
        self._cached.append(token)

    def _make_sampler(self):
        llama_cpp = runtime._llama_cpp()
        s = self.sampling
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if s.temperature == 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if s.top_k:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        # temperature before top-p, as in Hugging Face and vLLM, whose numbers DeepSeek's advice comes from
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        if s.top_p < 1:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if s.seed is None else s.seed & 0xFFFFFFFF
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    # -- lifetime ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._sampler is not None:
            runtime._llama_cpp().llama_sampler_free(self._sampler)
            self._sampler = None
        for owned in self._owns:
            owned.close()
        self._owns = ()

    def __enter__(self) -> "ChatSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
