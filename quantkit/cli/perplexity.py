"""`quantkit perplexity`: not built yet (issue #5)."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ..errors import NotBuiltError
from ._options import Json
from ._output import command


def register(app: typer.Typer) -> None:
    app.command("perplexity", help="Perplexity on wikitext-2 the way llama-perplexity computes it, with KL-divergence. (not built yet)")(run)


@command
def run(
    args: Annotated[Optional[List[str]], typer.Argument(help="Arguments (the command is not built yet).")] = None,
    json: Json = False,
) -> None:
    raise NotBuiltError("`quantkit perplexity` is not built yet", hint="it is tracked as issue #5")
