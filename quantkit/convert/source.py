"""Where a checkpoint comes from: a local folder, a Hub repo id, or a size label / model name of the R1-Distill
family. Hub checkpoints go into the standard Hugging Face cache (only the files conversion needs), are resumed
when a download was interrupted, and are reused offline (HF_HUB_OFFLINE=1) from that cache."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import FetchError, InputNotFoundError
from ..hub import hub_settings
from ..models import find_model

log = logging.getLogger(__name__)

# Everything conversion reads; never pickle weights, never the other formats a repo may carry.
NEEDED_FILES = (
    "config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    "generation_config.json",
)
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Source:
    folder: Path
    name: str  # for output file names: the repo's name, or the folder's
    repo_id: str | None = None


def resolve_source(source: str | Path, revision: str | None = None) -> Source:
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            log.warning("--revision is ignored for the local folder %s", path)
        return Source(path, path.resolve().name)
    model = find_model(text)
    if model is not None:
        if not model.arch.convertible:
            raise InputNotFoundError(f"{model.repo_id} ({model.label}) is not a distill quantkit converts",
                                     hint="convert one of the R1-Distill models (1.5B, 7B, 8B, 14B, 32B, 70B)")
        return download(model.repo_id, revision)
    if _REPO_ID.match(text) and not text.startswith((".", "/", "~")):  # "./model" is a path, not a repo id
        return download(text, revision)
    raise InputNotFoundError(f"{text} is neither a folder, a Hub repo id nor an R1-Distill size label",
                             hint="pass a local checkpoint folder, a repo id like deepseek-ai/DeepSeek-R1-Distill-Qwen-7B, "
                                  "or a size label like 7B")


def download(repo_id: str, revision: str | None = None) -> Source:
    """The repo's conversion files in the HF cache (downloaded or resumed as needed)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (HFValidationError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    log.info("fetching %s%s", repo_id, f"@{revision}" if revision else "")
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=list(NEEDED_FILES), **hub_settings())
    except HFValidationError as e:
        raise FetchError(f"{repo_id} is not a valid Hub repo id ({str(e).splitlines()[0][:120]})",
                         hint="pass a repo id like deepseek-ai/DeepSeek-R1-Distill-Qwen-7B, or a folder that exists") from None
    except RepositoryNotFoundError:
        raise FetchError(f"{repo_id} is not a model repo on the Hub (or it is private)",
                         hint="check the repo id, or log in with `hf auth login`") from None
    except RevisionNotFoundError:
        raise FetchError(f"{repo_id} has no revision {revision!r}", hint="check the branch, tag or commit") from None
    except LocalEntryNotFoundError:
        raise FetchError(f"{repo_id} is not in the local Hugging Face cache and the Hub cannot be reached",
                         hint="connect to the network once (or unset HF_HUB_OFFLINE) to download it") from None
    except (HfHubHTTPError, OSError) as e:
        raise FetchError(f"downloading {repo_id} failed: {str(e).splitlines()[0][:200]}",
                         hint="run again: the download resumes where it stopped") from None
    return Source(Path(folder), repo_id.split("/")[-1], repo_id)

