"""`push`: a run's folder to a model repo on the Hugging Face Hub — the GGUFs (every shard), the card
(README.md), the importance matrix and report.png — through huggingface_hub: `create_repo`, then one
`create_commit` whose large files go up the way huggingface_hub sends them (Xet where it is installed, else
LFS). An interrupted push resumes: the Hub keeps what arrived, and the next push sends only what it lacks
(huggingface_hub skips objects the Hub already holds and files that have not changed).

The token is huggingface_hub's: `HF_TOKEN`, else the one `hf auth login` saved.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import HubUploadError, InputNotFoundError
from ..hub import endpoint

log = logging.getLogger(__name__)

CARD = "README.md"
PICTURE = "report.png"
PLACEHOLDER = "<you>/"  # in the commands of a card written without a repo id


@dataclass
class PushFile:
    local: Path
    path_in_repo: str
    n_bytes: int


@dataclass
class PushResult:
    repo_id: str
    revision: str
    private: bool
    files: list[PushFile]
    dry_run: bool
    url: str = ""
    commit: str | None = None


def push_files(out_dir: str | Path) -> list[PushFile]:
    """What `push` uploads from `out_dir`: the card, report.png, and every GGUF (models, shards, imatrix) in
    `out_dir` and its `models/` folder, at the top of the repo."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputNotFoundError(f"{out_dir} is not a folder", hint="pass the output folder of `quantkit run`")
    card = out_dir / CARD
    if not card.is_file():
        raise InputNotFoundError(f"{out_dir} has no {CARD}", hint=f"write the card first: quantkit card {out_dir}")
    found = [card] + [p for p in (out_dir / PICTURE,) if p.is_file()]
    ggufs = sorted(p for folder in (out_dir, out_dir / "models") for p in folder.glob("*.gguf")
                   if p.is_file() and not p.name.startswith("."))
    if not ggufs:
        raise InputNotFoundError(f"{out_dir} holds no .gguf file", hint="run `quantkit run RECIPE` into it first")
    names: dict[str, Path] = {}
    for p in found + ggufs:
        if p.name in names:
            raise HubUploadError(f"two files would both be {p.name} in the repo: {names[p.name]} and {p}",
                                 hint="keep one of them")
        names[p.name] = p
    return [PushFile(p, p.name, p.stat().st_size) for p in found + ggufs]


def push(out_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         token: str | None = None, dry_run: bool = False, message: str | None = None) -> PushResult:
    """Upload `out_dir` (see `push_files`) to the model repo `repo_id`, creating it (and the branch `revision`)
    when needed. `dry_run` only lists what would be uploaded. A card still naming no repo (as `quantkit run`
    writes it) is written again for `repo_id` first, when the folder has its report."""
    card = Path(out_dir) / CARD
    if not dry_run and (Path(out_dir) / "report.json").is_file() and card.is_file() \
            and PLACEHOLDER in card.read_text(encoding="utf-8"):
        from .card import write_card

        write_card(out_dir, repo_id=repo_id)
    files = push_files(out_dir)
    revision = revision or "main"
    result = PushResult(repo_id, revision, private, files, dry_run)
    if dry_run:
        return result
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise HubUploadError("no Hugging Face token", hint="set HF_TOKEN to a token with write access, or run "
                                                           "`hf auth login`")
    api = HfApi(endpoint=endpoint(), token=token)
    try:
        result.url = str(api.create_repo(repo_id, private=private, exist_ok=True))
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in files]
        info = api.create_commit(repo_id, operations, revision=revision,
                                 commit_message=message or f"quantkit: {len(files)} files from {Path(out_dir).name}")
    except HfHubHTTPError as e:
        raise HubUploadError(_http_message(e, repo_id)) from e
    except (OSError, RuntimeError, ValueError) as e:  # the connection, or an upload that failed (RuntimeError)
        cause = e.__cause__ or e
        raise HubUploadError(f"the upload to {repo_id} stopped: {_first_line(cause)}",
                             hint="push again: the files that arrived are not sent twice") from e
    result.commit = info.oid
    log.info("pushed %d files to %s@%s (commit %s)", len(files), repo_id, revision, info.oid)
    return result


def _http_message(e, repo_id: str) -> str:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return f"the Hub refused the token for {repo_id} (HTTP {status})"
    return f"the Hub answered HTTP {status} for {repo_id}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
