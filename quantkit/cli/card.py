"""`quantkit card OUT_DIR`: the Hub model card (README.md) of a run's folder, from its report."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._output import command, stdout


def register(app: typer.Typer) -> None:
    app.command("card")(run)


@command
def run(
    out_dir: Annotated[Path, typer.Argument(help="The output folder of `quantkit run` (with report.json).",
                                            show_default=False)],
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", help="The Hub repo the files go to, for the "
                                                                     "commands in the card.")] = None,
    quantized_by: Annotated[Optional[str], typer.Option("--quantized-by", help="Who made the files.")] = None,
    license: Annotated[Optional[str], typer.Option("--license", help="The license (default: the base GGUF's).")] = None,
) -> None:
    """Write OUT_DIR/README.md: a Hugging Face model card with the report's measured numbers."""
    from ..share.card import write_card

    path = write_card(out_dir, repo_id=repo_id, quantized_by=quantized_by, license=license)
    stdout.print(f"wrote {path}", markup=False, highlight=False)
