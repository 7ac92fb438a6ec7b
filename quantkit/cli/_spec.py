"""The speculative-decoding flags of chat, serve, eval, bench and run as one engine.speculative.Speculation."""
from __future__ import annotations

from pathlib import Path

from ..engine.speculative import Speculation, speculation


def speculation_of(spec, draft: Path | None, draft_max: int, draft_min: int, draft_p_min: float,
                   spec_ngram: int) -> Speculation | None:
    """None when neither --spec nor --draft is given; a draft file is checked (exists, is a GGUF) here, before
    any model loads."""
    if draft is not None:
        from ..runtime import check_gguf_file

        check_gguf_file(draft)
    return speculation(getattr(spec, "value", spec), draft, draft_max, draft_min, draft_p_min, spec_ngram)
