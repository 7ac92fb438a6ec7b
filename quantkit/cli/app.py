"""Wires the commands together. Each command lives in its own module."""
from __future__ import annotations

import logging
import sys

import typer
from typer.core import TyperGroup

from . import (bench, card, chat, convert, estimate_memory, eval, export, imatrix, inspect, ollama, perplexity,
                   push, quantize, recipes, run, serve)
from ._output import debug_enabled, fail


# click's exception classes, found through typer's own (typer vendors click since 0.2x; it used click's before)
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _OneLineErrors(TyperGroup):
    """Usage errors (a missing argument, an unknown option, a value out of range) become one line on stderr with a
    hint and exit code 2, like every other error, where typer would draw a box of several lines."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _CLICK_ERROR as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `quantkit` alone: the help is already printed
                sys.exit(2)
            ctx = getattr(e, "ctx", None) if isinstance(e, _USAGE_ERROR) else None
            fail(e.format_message().splitlines()[0], f"see `{ctx.command_path if ctx else 'quantkit'} --help`")
            code = e.exit_code
        except typer.Abort:
            fail("aborted", "nothing half-written was left behind")
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="quantkit",
    help="DeepSeek-R1-Distill from Hugging Face to a running local model through GGUF and llama.cpp.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (convert, quantize, estimate_memory, imatrix, perplexity, chat, serve, bench, eval, inspect, export, run,
               recipes, card, push, ollama):
    module.register(app)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the library's log on stderr.")) -> None:
    level = logging.DEBUG if debug_enabled() else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if level > logging.INFO:  # gguf's notes on tokenizer files (llama.cpp's converter prints them too) are noise here
        logging.getLogger("gguf").setLevel(logging.ERROR)


def main() -> None:
    app(prog_name="quantkit")
