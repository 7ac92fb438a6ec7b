"""`quantkit recipes`: the shipped recipes, as a table or JSON."""
from __future__ import annotations

from rich.table import Table
import typer

from ..job.recipes import available_recipes, load_recipe
from ._options import Json
from ._output import command, emit_json, stdout


def register(app: typer.Typer) -> None:
    app.command("recipes")(run)


@command
def run(json: Json = False) -> None:
    """List the recipes `quantkit run` knows by name."""
    recipes = [load_recipe(path) for path in available_recipes()]
    if json:
        emit_json([{"name": r.name, "path": r.path, "description": r.description, "source": r.source,
                    "revision": r.revision, "outtype": r.outtype, "ladder": r.ladder,
                    "perplexity": r.perplexity, "bench": r.bench, "memory": r.memory, "chat": r.chat}
                   for r in recipes])
        return
    table = Table()
    for col in ("name", "source", "base", "ladder", "perplexity"):
        table.add_column(col)
    for r in recipes:
        p = r.perplexity
        table.add_row(r.name, r.source + (f" @ {r.revision}" if r.revision else ""), r.outtype,
                      f"{len(r.ladder)}: {r.ladder[0]} … {r.ladder[-1]}" if len(r.ladder) > 2 else ", ".join(r.ladder),
                      f"{p.dataset}, ctx {p.ctx}, {p.chunks or 'all'} chunks")
    stdout.print(table)
