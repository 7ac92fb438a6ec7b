"""The draft model a recipe's [chat] or [eval] names for speculative decoding, made like the job's other files.

A draft source (a Hub repo id, size label or checkpoint folder, as `source` is) is downloaded, converted and
quantized to its `draft_type` (as `quantkit convert DRAFT -t Q4_0`) into `<out>/models/drafts/`, and recorded
in the step store under `draft-<name>-<type>`: a later run, or the other table naming the same draft, finds it
there and makes nothing. The float file the quant is made from is removed once the quant is complete. A local
`.gguf` draft is used as it is.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from .recipes import local_draft

log = logging.getLogger(__name__)


def draft_key(draft: str, draft_type: str) -> str:
    """The store record of a draft source at a type (a file name: the source's characters that are safe)."""
    return f"draft-{re.sub(r'[^A-Za-z0-9._-]+', '_', draft).strip('_')}-{draft_type}"


def draft_model(job, draft: str | None, draft_type: str) -> Path | None:
    """The GGUF of the draft `draft` at `draft_type`, made now unless the job made it before (None: no draft)."""
    if draft is None:
        return None
    local = local_draft(draft, job.recipe.path.parent)
    if local is not None:
        return local
    from ..quantize.ladder import is_complete

    key, inputs = draft_key(draft, draft_type), {"source": draft, "type": draft_type}
    kept = job.kept(key, inputs)
    if kept is not None and is_complete(Path(kept["path"]), draft_type):
        return Path(kept["path"])
    job.progress.start(f"draft {draft} {draft_type}")
    result = _make(job, draft, draft_type)
    job.store.save(key, inputs, result, result["seconds"])
    return Path(result["path"])


def _make(job, draft: str, draft_type: str) -> dict:
    import time

    from ..convert import convert

    t0 = time.perf_counter()
    made = convert(draft, job.models_dir / "drafts", types=[draft_type], threads=job.threads)
    quant = next(f for f in made.files if f.type == draft_type)
    if made.base.path != quant.path:  # the float file was only the way to the quant
        made.base.path.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    log.info("draft %s (%s) made in %.1f s: %s", draft, draft_type, seconds, quant.path)
    return {"path": quant.path, "type": draft_type, "n_bytes": quant.path.stat().st_size, "seconds": seconds}
