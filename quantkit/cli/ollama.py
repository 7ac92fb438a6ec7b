"""`quantkit ollama MODEL.gguf`: an Ollama Modelfile beside the file, and `ollama create` when Ollama is there."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._options import GGUFPath, Json
from ._output import command, emit_json, stdout


def register(app: typer.Typer) -> None:
    app.command("ollama")(run)


@command
def run(
    model: GGUFPath,
    vram: Annotated[Optional[float], typer.Option("--vram", min=0.1, help="GPU memory in GiB: num_ctx is the largest "
                                                                          "context that fits with every layer.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="The Ollama model name (default: from the file "
                                                               "name, e.g. deepseek-r1-distill-qwen-7b:q4_k_m).")] = None,
    create: Annotated[bool, typer.Option("--create/--no-create", help="Run `ollama create` when ollama is on PATH.")] = True,
    json: Json = False,
) -> None:
    """Write an Ollama Modelfile (R1 template, DeepSeek's stop tokens and sampling, num_ctx for --vram)."""
    from ..share.ollama import write_modelfile

    result = write_modelfile(model, vram_gib=vram, name=name, create=create)
    if json:
        emit_json(result)
        return
    stdout.print(f"wrote {result.modelfile} (num_ctx {result.num_ctx})", markup=False, highlight=False)
    if result.created:
        stdout.print(f"created Ollama model {result.name}: ollama run {result.name}", markup=False, highlight=False)
    else:
        stdout.print(f"then: cd {result.modelfile.parent} && {' '.join(result.command)}", markup=False,
                     highlight=False)
