"""`quantkit convert`: not built yet (issue #3)."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ..errors import NotBuiltError
from ._options import Json
from ._output import command


def register(app: typer.Typer) -> None:
    app.command("convert", help="Convert an R1-Distill checkpoint (repo id, folder or size label) to GGUF and quantize it. (not built yet)")(run)


@command
def run(
    args: Annotated[Optional[List[str]], typer.Argument(help="Arguments (the command is not built yet).")] = None,
    json: Json = False,
) -> None:
    raise NotBuiltError("`quantkit convert` is not built yet", hint="it is tracked as issue #3")
