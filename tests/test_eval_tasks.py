"""Eval tasks: each Hub dataset format (jsonl, parquet, csv) fetched from the local fake Hub at its pinned revision
and parsed into problems, reused offline; the gated dataset's one-line error; task files and their errors; arith."""
from __future__ import annotations

import csv
import json
import re
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quantkit.chat import MATH_INSTRUCTION
from quantkit.errors import (GatedTaskError, InputNotFoundError, TaskFileError, TaskUnavailableError,
                             UnknownTaskError)
from quantkit.eval.tasks import (ARITH_LEVELS, CHOICE_INSTRUCTION, HUB_TASKS, arith_problems, gsm8k_gold, load_task,
                                 read_task_file)
from tests._fixtures.hub_server import FakeHub

TOKEN = "hf_accepted_terms"

MATH500 = [
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "solution": "It is $\\boxed{\\frac34}$.",
     "answer": "\\frac{3}{4}", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Solve $x^2=4$ for $x>0$.", "solution": "...", "answer": "2", "subject": "Algebra", "level": 2,
     "unique_id": "test/algebra/7.json"},
]
AIME = {"id": [60, 61], "problem": ["Find the remainder when $2^{10}$ is divided by 7.", "How many primes are below 20?"],
        "solution": ["...", "..."], "answer": ["2", "8"], "url": ["https://example/1", "https://example/2"]}
GSM8K = {"question": ["Janet has 3 ducks. How many?", "A farm sells 1,250 eggs a day for $1 each. Revenue?"],
         "answer": ["She has 3 ducks.\n#### 3", "1,250 * 1 = <<1250*1=1250>>1250\n#### 1,250"]}
GPQA_COLUMNS = ["Pre-Revision Question", "Pre-Revision Correct Answer", "Question", "Correct Answer",
                "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Explanation", "Record ID",
                "High-level domain"]


def gpqa_rows(n: int = 8) -> list[dict]:
    return [{"Pre-Revision Question": "old", "Pre-Revision Correct Answer": "old", "Question": f"Question {i}?",
             "Correct Answer": f"right {i}", "Incorrect Answer 1": f"wrong a{i}", "Incorrect Answer 2": f"wrong b{i}",
             "Incorrect Answer 3": f"wrong c{i}", "Explanation": "because", "Record ID": f"rec{i:04d}",
             "High-level domain": "Physics"} for i in range(n)]


def write_hub(root):
    base = root / "datasets"
    (base / "HuggingFaceH4/MATH-500").mkdir(parents=True)
    with open(base / "HuggingFaceH4/MATH-500/test.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in MATH500)
    (base / "HuggingFaceH4/aime_2024/data").mkdir(parents=True)
    pq.write_table(pa.table(AIME), base / "HuggingFaceH4/aime_2024/data/train-00000-of-00001.parquet")
    (base / "openai/gsm8k/main").mkdir(parents=True)
    pq.write_table(pa.table(GSM8K), base / "openai/gsm8k/main/test-00000-of-00001.parquet")
    (base / "Idavidrein/gpqa").mkdir(parents=True)
    with open(base / "Idavidrein/gpqa/gpqa_diamond.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, GPQA_COLUMNS)
        writer.writeheader()
        writer.writerows(gpqa_rows())


@pytest.fixture
def hub(tmp_path, monkeypatch):
    write_hub(tmp_path / "hub")
    with FakeHub(tmp_path / "hub", any_commit=True) as server:
        server.gated["Idavidrein/gpqa"] = {TOKEN}
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
        yield server


def asked_revisions(hub, repo: str) -> set[str]:
    return {m[1] for _, path, _ in hub.requests if (m := re.search(f"{repo}/resolve/([^/]+)/", path))}


def test_math500_jsonl(hub):
    problems = load_task("math500")
    assert [p.id for p in problems] == ["test/prealgebra/1.json", "test/algebra/7.json"]
    assert problems[0].prompt == f"What is $\\frac{{1}}{{2}}+\\frac{{1}}{{4}}$?\n{MATH_INSTRUCTION}"
    assert [p.answer for p in problems] == ["\\frac{3}{4}", "2"]
    assert problems[0].kind == "math" and problems[0].extra == {"subject": "Prealgebra", "level": 1}
    assert asked_revisions(hub, "HuggingFaceH4/MATH-500") == {HUB_TASKS["math500"].revision}


def test_aime_parquet(hub):
    problems = load_task("aime24")
    assert [(p.id, p.answer, p.kind) for p in problems] == [("60", "2", "math"), ("61", "8", "math")]
    assert problems[1].prompt == f"How many primes are below 20?\n{MATH_INSTRUCTION}"
    assert asked_revisions(hub, "HuggingFaceH4/aime_2024") == {HUB_TASKS["aime24"].revision}


def test_gsm8k_parquet(hub):
    problems = load_task("gsm8k")
    assert [(p.id, p.answer, p.kind) for p in problems] == [("gsm8k-0", "3", "number"), ("gsm8k-1", "1250", "number")]
    assert problems[0].prompt.startswith("Janet has 3 ducks. How many?\n")
    assert gsm8k_gold("work\n#### -1,000.5") == "-1000.5"
    with pytest.raises(TaskFileError, match="####"):
        gsm8k_gold("no marker")


def test_gpqa_csv_gated(hub, monkeypatch):
    with pytest.raises(GatedTaskError) as no_token:
        load_task("gpqa-diamond")
    line = f"{no_token.value} ({no_token.value.hint})"
    assert "\n" not in line
    assert "Idavidrein/gpqa" in line and "accept its terms" in line and "HF_TOKEN" in line
    monkeypatch.setenv("HF_TOKEN", "hf_did_not_accept")
    with pytest.raises(GatedTaskError):  # the Hub's 403 for a token that has not accepted the terms
        load_task("gpqa-diamond")
    codes = [c for c in hub.requests if "gpqa" in c[1]]
    assert codes  # the requests did reach the fake Hub

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    problems = load_task("gpqa-diamond")
    assert [p.id for p in problems] == [f"rec{i:04d}" for i in range(8)]
    letters = []
    for i, p in enumerate(problems):
        assert p.kind == "choice" and p.answer in "ABCD"
        choices = p.extra["choices"]
        assert sorted(choices) == sorted([f"right {i}", f"wrong a{i}", f"wrong b{i}", f"wrong c{i}"])
        assert choices["ABCD".index(p.answer)] == f"right {i}"
        assert f"\n{p.answer}) right {i}\n" in p.prompt + "\n"
        assert p.prompt.startswith(f"Question {i}?\n\nA) ") and p.prompt.endswith(CHOICE_INSTRUCTION)
        letters.append(p.answer)
    assert len(set(letters)) > 1  # shuffled, not always in one place
    assert load_task("gpqa-diamond") == problems  # the same letters every time


def test_offline_reuse(hub, tmp_path, monkeypatch):
    first = load_task("math500")
    hub.__exit__(None, None, None)  # the Hub goes away: one quick probe, then the cache
    assert load_task("math500") == first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_task("math500") == first
    with pytest.raises(TaskUnavailableError, match="not in the local Hugging Face cache"):
        load_task("aime24")


def test_offline_without_probe_requests(hub, monkeypatch):
    load_task("gsm8k")
    before = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert [p.answer for p in load_task("gsm8k")] == ["3", "1250"]
    assert len(hub.requests) == before  # HF_HUB_OFFLINE: not even the probe


def test_unknown_task():
    with pytest.raises(UnknownTaskError, match="unknown task 'math5000'") as e:
        load_task("math5000")
    assert "math500" in e.value.hint and "--task-file" in e.value.hint


# ---- task files -----------------------------------------------------------------------------------------------

def test_task_file_formats(tmp_path):
    rows = [{"problem": "What is 2+2?", "answer": "4"}, {"problem": "Half of 1?", "answer": "\\frac{1}{2}"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    with open(tmp_path / "p.csv", "w", newline="", encoding="utf-8-sig") as f:
        w = csv.DictWriter(f, ["problem", "answer"])
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    expected = None
    for name in ("p.jsonl", "p.csv", "p.parquet"):
        problems = read_task_file(tmp_path / name)
        assert [(p.id, p.answer, p.kind) for p in problems] == [("1", "4", "math"), ("2", "\\frac{1}{2}", "math")]
        assert problems[0].prompt == f"What is 2+2?\n{MATH_INSTRUCTION}"
        assert expected is None or problems == expected
        expected = problems


def test_task_file_named_columns(tmp_path):
    pq.write_table(pa.table({"q": ["A?", "B?"], "gold": [7, 8], "key": ["x1", "x2"]}), tmp_path / "t.parquet")
    problems = read_task_file(tmp_path / "t.parquet", problem_column="q", answer_column="gold", id_column="key",
                              kind="number")
    assert [(p.id, p.answer, p.kind) for p in problems] == [("x1", "7", "number"), ("x2", "8", "number")]


@pytest.mark.parametrize("content,message", [
    ('{"question": "a", "answer": "1"}\n', "has no column 'problem' \\(its columns: question, answer\\)"),
    ('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": "  "}\n', "row 2 has an empty 'answer'"),
    ('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": null}\n', "row 2 has an empty 'answer'"),
    ('{"problem": "a", "answer": "1"}\n{"problem": "b"\n', "line 2 is not JSON"),
    ('["problem", "answer"]\n', "line 1 is not a JSON object"),
    ("\n", "holds no problems"),
])
def test_task_file_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TaskFileError, match=message) as e:
        read_task_file(path)
    assert "\n" not in str(e.value) and "--answer-column" in e.value.hint


def test_task_file_other_errors(tmp_path):
    with pytest.raises(InputNotFoundError):
        read_task_file(tmp_path / "missing.jsonl")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(TaskFileError, match="neither .jsonl, .csv nor .parquet"):
        read_task_file(tmp_path / "t.txt")
    (tmp_path / "t.parquet").write_text("not parquet")
    with pytest.raises(TaskFileError, match="not a readable parquet file"):
        read_task_file(tmp_path / "t.parquet")
    (tmp_path / "c.csv").write_text("problem,solution\nA?,1\n")
    with pytest.raises(TaskFileError, match="no column 'answer'"):
        read_task_file(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("id,problem,answer\n1,A?,1\n1,B?,2\n")
    with pytest.raises(TaskFileError, match="the id '1' appears more than once"):
        read_task_file(tmp_path / "d.csv", id_column="id")


# ---- arith ------------------------------------------------------------------------------------------------------

def _solve(question: str) -> int:
    """An independent reading of an arith question: the expression for levels 1-3, the story for 4-5."""
    if m := re.fullmatch(r"What is (\d+) ([+\-×]) (\d+)\?", question):
        a, op, b = int(m[1]), m[2], int(m[3])
        return {"+": a + b, "-": a - b, "×": a * b}[op]
    n = [int(x) for x in re.findall(r"\d+", question)]
    if "gets" in question:
        return n[0] + n[1]
    if "gives" in question and "away" in question:
        return n[0] - n[1]
    if "bags with" in question:
        return n[0] * n[1]
    if "packs of" in question:
        return n[0] * n[1] - n[2]
    if "then buys" in question:
        return n[0] + n[1] + n[2]
    if "dollars each" in question:
        return n[0] - n[1] * n[2]
    raise AssertionError(f"unexpected question: {question}")


def test_arith():
    problems = arith_problems()
    assert len(problems) == 200 and len({p.id for p in problems}) == 200
    assert [p.extra["level"] for p in problems[:10]] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    for level in ARITH_LEVELS:
        assert sum(p.extra["level"] == level for p in problems) == 40
    for p in problems:
        question, instruction = p.prompt.split("\n")
        assert instruction == MATH_INSTRUCTION and p.kind == "number"
        assert int(p.answer) == _solve(question) and int(p.answer) >= 0
    assert arith_problems() == problems and arith_problems(seed=1) != problems
    assert arith_problems(20) == problems[:20]
    assert load_task("arith") == problems


def test_no_llama_cpp_import():
    import subprocess

    code = "import sys, quantkit.eval; assert 'llama_cpp' not in sys.modules, 'llama_cpp imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
