"""`quantkit inspect FILE.gguf`"""
from __future__ import annotations

import typer
from rich.table import Table

from ..gguf.info import GGUFInfo, inspect_gguf
from ._options import GGUFPath, Json
from ._output import command, emit_json, stdout


def register(app: typer.Typer) -> None:
    app.command("inspect")(run)


@command
def run(path: GGUFPath, json: Json = False) -> None:
    """Architecture, shapes, file type, tokenizer and a histogram of tensor types of a GGUF file."""
    info = inspect_gguf(path)
    if json:
        emit_json(info)
    else:
        show(info)


def _gib(n: int) -> str:
    return f"{n / 2**30:.3f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def show(info: GGUFInfo) -> None:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(no_wrap=True)
    summary.add_column(overflow="fold")
    rows = [
        ("file", info.path),
        ("size", f"{_gib(info.file_size)} ({info.file_size:,} bytes)"
                 + (f" in {info.n_shards} shards" if info.n_shards > 1 else "")),
        ("architecture", info.architecture),
        ("name", info.name or "-"),
        ("size label", info.size_label or "-"),
        ("parameters", f"{info.n_params:,}"),
        ("file type", info.file_type or "-"),
        ("bits per weight", f"{info.bits_per_weight:.2f}"),
        ("context length", str(info.context_length or "-")),
        ("layers", str(info.n_layer or "-")),
        ("embedding / ffn", f"{info.n_embd} / {info.n_ff}"),
        ("heads / kv heads / head dim", f"{info.n_head} / {info.n_head_kv} / {info.head_dim}"),
        ("vocabulary", str(info.vocab_size or "-")),
        ("tokenizer", f"{info.tokenizer_model or '-'} (pre: {info.tokenizer_pre or '-'})"),
        ("chat template", "yes" if info.has_chat_template else "no"),
    ]
    for key, value in rows:
        summary.add_row(f"[bold]{key}[/]", value)
    stdout.print(summary)
    table = Table(title=f"{info.n_tensors} tensors by type")
    for col in ("type", "tensors", "parameters", "bytes"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for t in info.tensor_types:
        table.add_row(t.type, str(t.count), f"{t.n_elements:,}", _gib(t.n_bytes))
    stdout.print(table)
