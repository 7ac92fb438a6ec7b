"""Wires the commands together. Each command lives in its own module."""
from __future__ import annotations

import logging

import typer

from ..cli import (bench, chat, convert, estimate_memory, eval, export, imatrix, inspect, perplexity, quantize,
                  recipes, run, serve)
from ._output import debug_enabled

app = typer.Typer(
    name="quantkit",
    help="DeepSeek-R1-Distill from Hugging Face to a running local model through GGUF and llama.cpp.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (convert, quantize, estimate_memory, imatrix, perplexity, chat, serve, bench, eval, inspect, export, run,
               recipes):
    module.register(app)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the library's log on stderr.")) -> None:
    level = logging.DEBUG if debug_enabled() else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if level > logging.INFO:  # gguf's notes on tokenizer files (llama.cpp's converter prints them too) are noise here
        logging.getLogger("gguf").setLevel(logging.ERROR)


def main() -> None:
    app()
