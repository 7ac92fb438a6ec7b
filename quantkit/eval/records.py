"""The samples of an evaluation, one JSON line each, appended as they finish: a run stopped by Ctrl-C, a crash or
SIGKILL loses at most the sample it was writing, and a re-run skips every (problem, sample) already there.

Each line is written whole, flushed and fsynced before the next sample counts as done. A kill in the middle of
a write leaves a torn last line (no newline, or half a JSON object): reading ignores it, and opening the file to
append cuts it off first, so that the next line starts clean. A bad line anywhere else means the file was
damaged by something else, and is an error.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import RecordsError
from ..resources import Closeable

log = logging.getLogger(__name__)


OPTIONAL_FIELDS = {"extra", "forced_tokens", "budget_reached", "looped", "prompt_eval_tokens", "drafted_tokens",
                   "accepted_tokens", "thought_tokens"}


@dataclass(frozen=True)
class Sample:
    problem_id: str
    sample: int  # 0 … k-1
    seed: int | None  # the sampler's seed for this sample (None: greedy)
    text: str  # everything generated, tags included
    reasoning: str  # the thought
    answer: str  # the answer part (after </think>)
    gold: str  # the expected answer
    extracted: str | None  # the answer the grader found, None if none
    verdict: str  # grading.VERDICTS: correct, wrong, no_answer, timeout, error
    prompt_tokens: int
    reasoning_tokens: int
    answer_tokens: int
    finish_reason: str  # stop, length, context, …
    seconds: float  # from the request to the last token
    extra: dict = field(default_factory=dict, compare=False)  # anything else a backend wants to keep
    # the thought under control (absent from records written before them: read as 0 / False)
    forced_tokens: int = 0  # of reasoning_tokens + answer_tokens, those the engine forced (the closing text)
    budget_reached: bool = False
    looped: bool = False
    # the engine's work (absent from older records: read as 0): prompt tokens evaluated (the rest shared or
    # cached), speculative decoding's drafted tokens and how many of them were accepted
    prompt_eval_tokens: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    thought_tokens: int | None = None  # the model's own thought tokens as the budget counts them (None: unknown)

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.sample)

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Sample":
        names = {f.name for f in fields(cls)}
        missing = names - set(data) - OPTIONAL_FIELDS
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        return cls(**{k: v for k, v in data.items() if k in names})


def read_samples(path: str | Path) -> list[Sample]:
    """The samples of a records file (none if it does not exist), a torn last line ignored."""
    samples, _ = _read(Path(path))
    return samples


def done_keys(samples: list[Sample]) -> set[tuple[str, int]]:
    """The (problem id, sample index) pairs already done."""
    return {s.key for s in samples}


def _read(path: Path) -> tuple[list[Sample], int]:
    """The samples, and the byte length of the file's whole lines (where a torn last line begins)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    samples, good_end, offset = [], 0, 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        last = number == len(lines)
        end = offset + len(line) + (0 if last else 1)
        if line.strip():
            try:
                samples.append(Sample.from_dict(json.loads(line)))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                if last or _only_blank(lines[number:]):
                    log.warning("%s: the last line is incomplete (a run stopped while writing it); ignored", path)
                    return samples, good_end
                raise RecordsError(f"{path} line {number} is not a sample record ({type(e).__name__}: {e})") from None
            if last:  # a whole record without its newline: the write stopped just before it
                log.warning("%s: the last line has no newline (a run stopped while writing it); ignored", path)
                samples.pop()
                return samples, good_end
        good_end = end
        offset = end
    return samples, good_end


def _only_blank(lines: list[bytes]) -> bool:
    return all(not line.strip() for line in lines)


class RecordWriter(Closeable):
    """Appends samples to a records file, one line each, synced to disk before `append` returns.

        with RecordWriter(out / "samples.jsonl") as records:
            todo = [key for key in wanted if key not in records.done]
            ...
            records.append(sample)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.samples, whole = _read(self.path)
        self.done = done_keys(self.samples)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # appends may come from several threads of a runner
        self._file = open(self.path, "ab")
        if self._file.tell() > whole:  # cut a torn last line off, so that the next record starts a line
            self._file.truncate(whole)
            self._file.seek(whole)

    def append(self, sample: Sample) -> None:
        line = sample.to_json().encode("utf-8") + b"\n"
        with self._lock:
            if sample.key in self.done:
                raise RecordsError(f"sample {sample.sample} of problem {sample.problem_id!r} is already in "
                                   f"{self.path}", hint="a done sample must not be generated again (a bug)")
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.samples.append(sample)
            self.done.add(sample.key)

    def close(self) -> None:
        self._file.close()
