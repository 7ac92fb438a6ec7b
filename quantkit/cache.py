"""Where quantkit keeps what it fetches and makes once: `$QUANTKIT_CACHE`, else `$XDG_CACHE_HOME/quantkit`,
else `~/.cache/quantkit`. Tests point QUANTKIT_CACHE elsewhere."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("QUANTKIT_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) / "quantkit" if xdg else Path.home() / ".cache" / "quantkit"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
