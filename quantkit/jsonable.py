"""Library results as plain JSON values: what `--json` prints and what `quantkit run` stores are the same."""
from __future__ import annotations

import dataclasses
import os
from typing import Any


def to_json(data: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return to_json(dataclasses.asdict(data))
    if isinstance(data, dict):
        return {str(k): to_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [to_json(v) for v in data]
    if isinstance(data, os.PathLike):
        return os.fspath(data)
    if hasattr(data, "item") and callable(data.item):  # numpy scalars
        return data.item()
    return data
