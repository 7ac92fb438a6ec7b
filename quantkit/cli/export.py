"""`quantkit export FILE.gguf OUT_DIR`: GGUF back to a Hugging Face checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import Force, GGUFPath, Json
from ._output import ByteProgress, command, emit_json, stdout


def register(app: typer.Typer) -> None:
    app.command("export")(run)


@command
def run(
    path: GGUFPath,
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the checkpoint into.", show_default=False)],
    dtype: Annotated[str, typer.Option("--dtype", help="Weight dtype: f32, f16 or bf16.")] = "bf16",
    force: Force = False,
    json: Json = False,
) -> None:
    """Write a GGUF (llama, qwen2) as a Hugging Face checkpoint: safetensors, config and tokenizer."""
    from ..convert.export import export_gguf

    with ByteProgress(enabled=not json) as progress:
        result = export_gguf(path, out_dir, dtype=dtype, force=force, progress=progress.update)
    if json:
        emit_json(result)
    else:
        stdout.print(f"wrote {result.out_dir} ({len(result.files)} files, {result.n_tensors} tensors, {result.dtype})")
