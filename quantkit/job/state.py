"""What each finished step of a job left behind: one JSON record per step (or per rung) in `<out>/steps/`,
written atomically, holding the step's inputs and its result. A record counts only while its inputs are the
same (files by name, size and modification time; settings by value), so a re-run redoes exactly what changed."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..files import atomic_file, prepare_dir
from ..files import to_json


def rung_key(step: str, qtype: str) -> str:
    """The name of the record of a step done once per file of the ladder (a step done once is named itself)."""
    return f"{step}-{qtype}"


def fingerprint(path: str | Path) -> dict:
    """A file as a step's input: a rebuilt file has another mtime, so every step that read it runs again."""
    st = Path(path).stat()
    return {"name": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class StepStore:
    def __init__(self, out_dir: Path):
        self.folder = Path(out_dir) / "steps"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def record(self, key: str) -> dict | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # written atomically, so only a hand-edited file gets here: redo the step

    def result(self, key: str, inputs: dict | None = None) -> Any:
        """The stored result of `key`, or None when there is none or it was made from other inputs."""
        rec = self.record(key)
        if rec is None or (inputs is not None and rec.get("inputs") != to_json(inputs)):
            return None
        return rec["result"]

    def save(self, key: str, inputs: dict, result: Any, seconds: float) -> Any:
        prepare_dir(self.folder)
        rec = {"step": key, "inputs": to_json(inputs), "result": to_json(result), "seconds": seconds,
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with atomic_file(self.path(key)) as tmp:
            tmp.write_text(json.dumps(rec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return rec["result"]
