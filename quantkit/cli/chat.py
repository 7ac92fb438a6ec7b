"""`quantkit chat MODEL`: an interactive chat, or one answer with `--prompt` (or text on stdin).

Interactive input: a line ending in `\\` continues on the next line; a line holding only `\"\"\"` starts a block
that runs to the next such line (for pasting). Commands: /exit, /clear, /regen, /think show|hide|summary,
/save FILE, /help. Ctrl-C stops the answer being written and returns to the prompt; Ctrl-C twice at the prompt
(or Ctrl-D) exits.
"""
from __future__ import annotations

import contextlib
import enum
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from ..chat import ChatSession, Sampling, Thinking, find_model_file, transcript, turn_summary
from ..engine import GenerationResult
from ..engine.thinking import BUDGET_MESSAGE
from ..errors import ContextFullError, InvalidArgumentError, QuantkitError
from ..runtime import describe_device
from ..memory.layers import remote_summary
from ._options import Ctx, Json, LoopGuard, LoopGuardMode, NGpuLayers, ReasoningBudget, ReasoningBudgetMessage, Rpc
from ._options import Draft, DraftMax, DraftMin, DraftPMin, Spec, SpecNgram, Threads
from ._output import command, emit_json, stderr, stdout
from ._rpc import rpc_endpoints
from ._spec import speculation_of

HELP = """commands: /exit  /clear  /regen  /think show|hide|summary  /save FILE  /help
multi-line: end a line with \\ to continue it, or put \"\"\" alone on a line to start and end a block
Ctrl-C stops the answer; Ctrl-C twice at the prompt (or Ctrl-D) exits"""

CONTEXT_WARNING = 0.8  # warn when the conversation fills this share of the context


class Think(str, enum.Enum):
    show = "show"
    hide = "hide"
    summary = "summary"


def register(app: typer.Typer) -> None:
    app.command("chat")(run)


@command
def run(
    model: Annotated[str, typer.Argument(help="A .gguf file, or a size label / repo id with -t.", show_default=False)],
    quant_type: Annotated[Optional[str], typer.Option("--type", "-t", help="Quant type of a model named by label.")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="Answer this one message and exit.")] = None,
    json: Json = False,
    think: Annotated[Think, typer.Option("--think", help="Show the reasoning dimmed, hide it, or one line.")] = Think.show,
    system: Annotated[Optional[str], typer.Option("--system", help="A system prompt (DeepSeek advises against it for R1).")] = None,
    math: Annotated[bool, typer.Option("--math", help="Add DeepSeek's step-by-step \\boxed{} instruction.")] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature (R1: 0.5-0.7).")] = Sampling.temperature,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling.")] = Sampling.top_p,
    top_k: Annotated[int, typer.Option("--top-k", help="Keep the k likeliest tokens first, as llama.cpp (0: all).")] = Sampling.top_k,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (default: random).")] = None,
    n_predict: Annotated[Optional[int], typer.Option("--n-predict", "-n", help="Most tokens per reply (default: until the context is full).")] = None,
    reasoning_budget: ReasoningBudget = None,
    reasoning_budget_message: ReasoningBudgetMessage = BUDGET_MESSAGE,
    loop_guard: LoopGuard = LoopGuardMode.end,
    ctx: Ctx = 8192,
    threads: Threads = None,
    n_gpu_layers: NGpuLayers = "auto",
    rpc: Rpc = None,
    spec: Spec = None,
    draft: Draft = None,
    draft_max: DraftMax = 8,
    draft_min: DraftMin = 0,
    draft_p_min: DraftPMin = 0.75,
    spec_ngram: SpecNgram = 4,
) -> None:
    """Chat with a GGUF model, its <think> reasoning shown apart from the answer (R1 settings by default)."""
    endpoints = rpc_endpoints(rpc)
    if n_predict is not None and n_predict < 1:
        raise InvalidArgumentError(f"--n-predict must be ≥ 1, not {n_predict}")
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
        if not prompt.strip():
            raise InvalidArgumentError("stdin is empty", hint="pass --prompt TEXT, or run in a terminal to chat")
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    thinking = Thinking(reasoning_budget, reasoning_budget_message, loop_guard.value)
    path = find_model_file(model, quant_type)
    speculating = speculation_of(spec, draft, draft_max, draft_min, draft_p_min, spec_ngram)
    if system:
        stderr.print("note: DeepSeek advises no system prompt for R1 models: put instructions in your message",
                     style="yellow", highlight=False)
    with _ctrl_c_interrupts(prompt is None), ChatSession.open(
            path, n_ctx=ctx, n_gpu_layers=n_gpu_layers, threads=threads, sampling=sampling, system=system,
            math=math, rpc=endpoints, thinking=thinking, speculation=speculating) as session:
        _banner(session)
        if reasoning_budget is not None and not session.thinks:
            stderr.print(f"warning: --reasoning-budget has no effect: {session.model.path.name}'s chat template has "
                         "no <think>", style="yellow", highlight=False)
        if prompt is not None:
            _one_shot(session, prompt, n_predict, json, think)
        else:
            Interactive(session, think, n_predict).loop()


@contextlib.contextmanager
def _ctrl_c_interrupts(interactive: bool):
    """Interactive, Ctrl-C raises KeyboardInterrupt however chat was started: a Python program started with SIGINT
    ignored (inherited from a parent that ignores it) keeps ignoring it and never gets KeyboardInterrupt."""
    if not interactive:  # one answer: a SIGINT the parent ignores (a background job) stays ignored
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:  # None: installed outside Python, nothing to put back
            signal.signal(signal.SIGINT, previous)


def _banner(session: ChatSession) -> None:
    m = session.model
    where = remote_summary(m.layer_devices) or f"{m.layers_on_gpu}/{m.n_layer + 1} layers on GPU"
    stderr.print(f"{m.path.name} · {describe_device(session.threads)} · {where} · ctx {session.n_ctx}", style="dim",
                 highlight=False)


def _stats(r: GenerationResult) -> str:
    line = (f"prompt {r.prompt_tokens} tok ({r.prompt_eval_tokens} new) {r.prompt_tps:.1f} tok/s · "
            f"gen {r.gen_tokens} tok {r.gen_tps:.1f} tok/s · thought {r.reasoning_tokens} tok · "
            f"answer {r.answer_tokens} tok")
    if r.drafted_tokens:
        line += f" · drafted {r.drafted_tokens} accepted {r.accepted_tokens} ({r.acceptance:.0%})"
    if r.forced_tokens:
        line += f" · forced {r.forced_tokens} tok"
    if r.budget_reached:
        line += " · thought ended by the budget"
    if r.looped:
        line += " · looped"
    if r.finish_reason != "stop":
        line += f" · stopped: {r.finish_reason}"
    return line


def _cut_off_note(r: GenerationResult) -> str | None:
    if r.thought_unfinished and r.finish_reason in ("length", "context"):
        return ("the thought was cut off before </think>, so there is no answer: "
                + ("raise --n-predict" if r.finish_reason == "length" else "/clear or pass a larger --ctx"))
    return None


def _summary_line(thought: str, seconds: float) -> str:
    """A thought in one line: how long it took and how it began."""
    words = " ".join(thought.split())
    return f"thought for {seconds:.1f} s: {words[:100]}{'…' if len(words) > 100 else ''}"


# ---- one-shot -----------------------------------------------------------------------------------------------

def _one_shot(session: ChatSession, prompt: str, n_predict: int | None, json: bool, think: Think) -> None:
    """The answer on stdout as it comes, the thought on stderr; or one JSON document."""
    pieces = session.send(prompt, n_predict)
    if json:
        for _ in pieces:
            pass
        emit_json(turn_summary(session.turns[-1].result))
        return
    t0 = time.perf_counter()
    wrote_thought = False
    for piece in pieces:
        if piece.kind == "thought":
            if think is Think.show:
                stderr.print(Text(piece.text, style="dim"), end="")
                wrote_thought = True
        else:
            if wrote_thought:
                stderr.print()
                wrote_thought = False
            sys.stdout.write(piece.text)
            sys.stdout.flush()
    r = session.turns[-1].result
    sys.stdout.write("\n")
    sys.stdout.flush()
    if think is Think.summary and r.reasoning.strip():
        stderr.print(_summary_line(r.reasoning, time.perf_counter() - t0), style="dim", highlight=False, markup=False)
    if note := _cut_off_note(r):
        stderr.print(f"warning: {note}", style="yellow", highlight=False)
    stderr.print(_stats(r), style="dim", highlight=False)


# ---- interactive --------------------------------------------------------------------------------------------

class Interactive:
    def __init__(self, session: ChatSession, think: Think, n_predict: int | None):
        self.session = session
        self.think = think
        self.n_predict = n_predict

    def loop(self) -> None:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        stderr.print(HELP, style="dim", highlight=False, markup=False)
        interrupted_at_prompt = False
        while True:
            try:
                text = self._read()
            except KeyboardInterrupt:
                if interrupted_at_prompt:
                    stdout.print()
                    return
                interrupted_at_prompt = True
                stdout.print("\n(Ctrl-C again to exit)", style="dim", highlight=False)
                continue
            except EOFError:
                stdout.print()
                return
            interrupted_at_prompt = False
            if not text.strip():
                continue
            if text.startswith("/"):
                if self._command(text.strip()):
                    return
                continue
            self._turn(lambda: self.session.send(text, self.n_predict))

    def _read(self) -> str:
        lines = []
        first = input(">>> ")
        if first.strip() == '"""':
            while (line := input("... ")).strip() != '"""':
                lines.append(line)
            return "\n".join(lines)
        line = first
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = input("... ")
        lines.append(line)
        return "\n".join(lines)

    def _command(self, text: str) -> bool:
        """Run a /command; True to exit."""
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit", "/bye"):
            return True
        if name == "/clear":
            self.session.clear()
            stdout.print("(conversation cleared)", style="dim", highlight=False)
        elif name == "/regen":
            if not self.session.turns:
                stdout.print("(nothing to regenerate yet)", style="dim", highlight=False)
            else:
                self._turn(lambda: self.session.regenerate(self.n_predict))
        elif name == "/think":
            try:
                self.think = Think(arg)
                stdout.print(f"(thoughts: {self.think.value})", style="dim", highlight=False)
            except ValueError:
                stdout.print("usage: /think show|hide|summary", style="yellow", highlight=False)
        elif name == "/save":
            if not arg:
                stdout.print("usage: /save FILE", style="yellow", highlight=False)
            else:
                self._save(Path(arg).expanduser())
        elif name == "/help":
            stdout.print(HELP, highlight=False, markup=False)
        else:
            stdout.print(f"unknown command {name}; /help lists them", style="yellow", highlight=False, markup=False)
        return False

    def _save(self, path: Path) -> None:
        try:
            path.write_text(transcript(self.session.turns, f"Chat with {self.session.model.path.name}"))
            stdout.print(f"(saved {len(self.session.turns)} turns to {path})", style="dim", highlight=False)
        except OSError as e:
            stdout.print(f"could not save to {path}: {e.strerror or e}", style="yellow", highlight=False)

    def _turn(self, start) -> None:
        try:
            pieces = start()
            t0 = time.perf_counter()
            self._stream(pieces, t0)
        except ContextFullError as e:
            stdout.print(f"{e.message} ({e.hint})", style="yellow", highlight=False)
            return
        except QuantkitError as e:
            stdout.print(f"error: {e.message} ({e.hint})", style="red", highlight=False)
            return
        r = self.session.turns[-1].result
        if note := _cut_off_note(r):
            stdout.print(note, style="yellow", highlight=False)
        stderr.print(_stats(r), style="dim", highlight=False)
        used, n_ctx = self.session.tokens_used, self.session.n_ctx
        if used >= CONTEXT_WARNING * n_ctx:
            stdout.print(f"warning: the context is {used / n_ctx:.0%} full ({used}/{n_ctx} tokens): "
                         "/clear to start over", style="yellow", highlight=False)

    def _stream(self, pieces, t0: float) -> None:
        """Thought dimmed as it comes (or a spinner, then one line), then the answer as Markdown."""
        from rich.live import Live
        from rich.markdown import Markdown  # here: it loads pygments, which no other command needs

        answer = thought = ""
        live: Live | None = None
        status = None if self.think is Think.show else stdout.status("thinking…", spinner="dots")
        try:
            if status is not None:
                status.start()
            for piece in pieces:
                if piece.kind == "thought":
                    thought += piece.text
                    if self.think is Think.show:
                        stdout.print(Text(piece.text, style="dim"), end="")
                    continue
                if live is None:
                    if status is not None:
                        status.stop()
                        status = None
                    self._end_thought(thought, t0)
                    live = Live(Markdown(""), console=stdout, refresh_per_second=8, vertical_overflow="visible")
                    live.start()
                answer += piece.text
                live.update(Markdown(answer))
            if live is None:
                self._end_thought(thought, t0)
        except KeyboardInterrupt:
            pieces.close()  # the session records the turn as interrupted
            stdout.print("\n[stopped]", style="yellow", highlight=False, markup=False)
        finally:
            if status is not None:
                status.stop()
            if live is not None:
                live.stop()

    def _end_thought(self, thought: str, t0: float) -> None:
        if not thought.strip():
            return
        if self.think is Think.show:
            stdout.print()
        elif self.think is Think.summary:
            stdout.print(_summary_line(thought, time.perf_counter() - t0), style="dim", highlight=False,
                         markup=False)
