"""The samples file of a resumable eval: one synced line per sample, a torn last line ignored and cut off before
the next append, done keys, and a damaged middle line refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from quantkit.errors import RecordsError
from quantkit.eval.records import RecordWriter, Sample, done_keys, read_samples


def sample(problem: str, index: int, text: str = "thought</think>\\boxed{1}") -> Sample:
    return Sample(problem_id=problem, sample=index, seed=1000 + index, text=text, reasoning="thought",
                  answer="\\boxed{1}", gold="1", extracted="1", verdict="correct", prompt_tokens=12,
                  reasoning_tokens=30, answer_tokens=5, finish_reason="stop", seconds=0.5,
                  extra={"level": 3})


def test_round_trip(tmp_path):
    path = tmp_path / "out" / "samples.jsonl"
    assert read_samples(path) == []
    with RecordWriter(path) as records:
        assert records.done == set()
        records.append(sample("p1", 0, "unicode: é ✓ \n newline"))
        records.append(sample("p1", 1))
        with pytest.raises(RecordsError, match="already in"):
            records.append(sample("p1", 1))
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[-1] == b""  # one line per sample, each ending in a newline
    assert json.loads(lines[0])["text"] == "unicode: é ✓ \n newline"
    back = read_samples(path)
    assert back == [sample("p1", 0, "unicode: é ✓ \n newline"), sample("p1", 1)]
    assert back[0].extra == {"level": 3} and back[0].correct
    assert done_keys(back) == {("p1", 0), ("p1", 1)}


@pytest.mark.parametrize("tail", [b'{"problem_id": "p2", "sam', b"\xe2\x9c", sample("p2", 0).to_json().encode()])
def test_torn_last_line(tmp_path, tail):
    path = tmp_path / "samples.jsonl"
    with RecordWriter(path) as records:
        records.append(sample("p1", 0))
    whole = path.read_bytes()
    path.write_bytes(whole + tail)  # a run killed in the middle of its next write
    assert read_samples(path) == [sample("p1", 0)]
    with RecordWriter(path) as records:
        assert records.done == {("p1", 0)}
        assert path.read_bytes() == whole  # the torn line is gone before anything is appended
        records.append(sample("p2", 0))
    assert read_samples(path) == [sample("p1", 0), sample("p2", 0)]


def test_damaged_middle_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(sample("p1", 0).to_json() + "\n{not json}\n" + sample("p2", 0).to_json() + "\n")
    with pytest.raises(RecordsError, match="line 2 is not a sample record"):
        read_samples(path)
    path.write_text('{"problem_id": "p1"}\n' + sample("p2", 0).to_json() + "\n")
    with pytest.raises(RecordsError, match="line 1 .*KeyError"):
        RecordWriter(path)


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text("\n" + sample("p1", 0).to_json() + "\n\n")
    assert read_samples(path) == [sample("p1", 0)]


def test_sigkill_between_appends(tmp_path):
    """A process killed with SIGKILL after each fsynced append has lost nothing it reported as written."""
    path = tmp_path / "samples.jsonl"
    script = f"""
import os, signal, sys
sys.path.insert(0, {os.getcwd()!r})
from tests.test_eval_records import sample
from quantkit.eval.records import RecordWriter
records = RecordWriter({str(path)!r})
for i in range(5):
    records.append(sample("p", i))
    print(i, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == -9
    assert run.stdout.split() == ["0", "1", "2", "3", "4"]
    assert done_keys(read_samples(path)) == {("p", i) for i in range(5)}
