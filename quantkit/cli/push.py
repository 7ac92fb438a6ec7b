"""`quantkit push OUT_DIR REPO_ID`: a run's GGUFs, card, imatrix and picture to a model repo on the Hub."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._options import Json
from ._output import command, emit_json, stdout


def register(app: typer.Typer) -> None:
    app.command("push")(run)


@command
def run(
    out_dir: Annotated[Path, typer.Argument(help="The output folder of `quantkit run` (with its README.md card).",
                                            show_default=False)],
    repo_id: Annotated[str, typer.Argument(help="The model repo, e.g. you/DeepSeek-R1-Distill-Qwen-7B-GGUF.",
                                           show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to push to (made when missing).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be uploaded; send nothing.")] = False,
    json: Json = False,
) -> None:
    """Upload a run's GGUFs, model card, imatrix and report.png to a Hub model repo (token: HF_TOKEN or
    `hf auth login`)."""
    from ..share.push import push
    from ._output import stderr

    if not stderr.is_terminal:  # huggingface_hub's bars only on a terminal: a log or a pipe gets the one line
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    result = push(out_dir, repo_id, private=private, revision=revision, dry_run=dry_run)
    if json:
        emit_json(result)
        return
    total = sum(f.n_bytes for f in result.files)
    head = "would upload" if dry_run else "uploaded"
    stdout.print(f"{head} to {repo_id}@{result.revision}{' (private)' if private else ''}: {len(result.files)} files, "
                 f"{total / 2**30:.2f} GiB", markup=False, highlight=False)
    for f in result.files:
        stdout.print(f"  {f.path_in_repo:<48} {f.n_bytes / 2**20:10.1f} MiB", markup=False, highlight=False)
    if not dry_run:
        stdout.print(f"commit {result.commit}: {result.url}", markup=False, highlight=False)
