"""The problems an evaluation asks: four public benchmarks fetched from the Hub, a user's own file, and `arith`,
generated arithmetic that ships with quantkit so that a ladder can be scored offline.

Each task is data: the dataset repo, the revision it is pinned to, the file in it, and how its rows become
`Problem`s. The file lands in the Hugging Face cache, so a second run (or an offline one) reads it from there.

The prompt is DeepSeek's protocol for R1: the problem, then the math instruction on the next line, no system
prompt. GPQA's prompt lists the four choices under letters A-D, shuffled with a seed fixed per question, and asks
for the letter in `\\boxed{}` the same way.
"""
from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..models import MATH_INSTRUCTION
from ..measure.texts import _quiet
from ..errors import (GatedTaskError, InputNotFoundError, TaskFileError, TaskUnavailableError,
                      UnknownTaskError)
from ..hub import hub_settings

log = logging.getLogger(__name__)

# How an answer is graded: "math" by math-verify (expressions, sets, intervals, text); "number" as one number
# (GSM8K and arith: commas, units and currency signs dropped); "choice" as a letter A-D (GPQA).
Kind = Literal["math", "number", "choice"]
KINDS: tuple[str, ...] = ("math", "number", "choice")

CHOICE_INSTRUCTION = ("Please reason step by step, and put the letter of your final answer (A, B, C or D) "
                      "within \\boxed{}.")


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str  # the whole user message: the problem and the instruction
    answer: str  # the gold answer, as the dataset writes it
    kind: Kind
    extra: dict = field(default_factory=dict, compare=False)  # level, subject, choices …: kept in the records


def math_prompt(problem: str) -> str:
    """DeepSeek's prompt for a math problem: the problem, and the instruction on the next line."""
    return f"{problem.strip()}\n{MATH_INSTRUCTION}"


# ---- tasks on the Hub ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HubTask:
    name: str
    repo_id: str  # a dataset repo
    revision: str  # the commit the task is pinned to: the problems never change under a ladder
    filename: str
    kind: Kind
    problems: Callable[[list[dict]], list[Problem]]  # the file's rows → problems
    gated: bool = False

    @property
    def url(self) -> str:
        return f"https://huggingface.co/datasets/{self.repo_id}"


def _math500(rows: list[dict]) -> list[Problem]:
    return [Problem(str(_field(row, "unique_id", i)), math_prompt(_field(row, "problem", i)),
                    str(_field(row, "answer", i)), "math",
                    {k: row[k] for k in ("subject", "level") if k in row})
            for i, row in enumerate(rows)]


def _aime(rows: list[dict]) -> list[Problem]:
    return [Problem(str(row.get("id", i)), math_prompt(_field(row, "problem", i)), str(_field(row, "answer", i)),
                    "math")
            for i, row in enumerate(rows)]


def gsm8k_gold(solution: str) -> str:
    """The number after GSM8K's `####`, commas removed ("#### 1,250" → "1250")."""
    _, sep, tail = solution.rpartition("####")
    if not sep:
        raise TaskFileError(f"a GSM8K answer has no '#### <number>' line: {solution[-80:]!r}")
    return tail.strip().replace(",", "")


def _gsm8k(rows: list[dict]) -> list[Problem]:
    return [Problem(f"gsm8k-{i}", math_prompt(_field(row, "question", i)), gsm8k_gold(_field(row, "answer", i)),
                    "number")
            for i, row in enumerate(rows)]


def gpqa_problem(row: dict, index: int) -> Problem:
    """One GPQA row: the correct answer and the three incorrect ones shuffled by a seed that is the question's
    own id (its "Record ID", else its row), so that every run and every model sees the same letters."""
    qid = str(row.get("Record ID") or f"gpqa-{index}")
    correct = _field(row, "Correct Answer", index).strip()
    choices = [correct] + [_field(row, f"Incorrect Answer {n}", index).strip() for n in (1, 2, 3)]
    random.Random(f"gpqa:{qid}").shuffle(choices)
    letter = "ABCD"[choices.index(correct)]
    listed = "\n".join(f"{'ABCD'[n]}) {choice}" for n, choice in enumerate(choices))
    prompt = f"{_field(row, 'Question', index).strip()}\n\n{listed}\n\n{CHOICE_INSTRUCTION}"
    return Problem(qid, prompt, letter, "choice", {"choices": choices})


def _gpqa(rows: list[dict]) -> list[Problem]:
    return [gpqa_problem(row, i) for i, row in enumerate(rows)]


HUB_TASKS = {t.name: t for t in (
    HubTask("math500", "HuggingFaceH4/MATH-500", "6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be", "test.jsonl",
            "math", _math500),
    HubTask("aime24", "HuggingFaceH4/aime_2024", "2fe88a2f1091d5048c0f36abc874fb997b3dd99a",
            "data/train-00000-of-00001.parquet", "math", _aime),
    HubTask("gsm8k", "openai/gsm8k", "740312add88f781978c0658806c59bc2815b9866",
            "main/test-00000-of-00001.parquet", "number", _gsm8k),
    HubTask("gpqa-diamond", "Idavidrein/gpqa", "83022cefff930aea54f654c0b282e74b9eeda5c6", "gpqa_diamond.csv",
            "choice", _gpqa, gated=True),
)}

ARITH = "arith"
TASK_NAMES: tuple[str, ...] = (ARITH, *HUB_TASKS)


def load_task(name: str) -> list[Problem]:
    """The problems of task `name`, in the dataset's order (fetched into the HF cache the first time)."""
    if name == ARITH:
        return arith_problems()
    if name not in HUB_TASKS:
        raise UnknownTaskError(f"unknown task {name!r}",
                               hint=f"choose one of: {', '.join(TASK_NAMES)}; or pass --task-file FILE")
    task = HUB_TASKS[name]
    path = fetch_task_file(task)
    problems = task.problems(read_rows(path))
    log.info("%s: %d problems from %s@%s", name, len(problems), task.repo_id, task.revision[:8])
    return problems


def fetch_task_file(task: HubTask) -> Path:
    """The task's file in the HF cache: downloaded once, then reused without a request when the Hub is out of
    reach (or HF_HUB_OFFLINE is set)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    try:
        with _quiet("huggingface_hub"):
            return Path(hf_hub_download(task.repo_id, task.filename, repo_type="dataset", revision=task.revision,
                                        **hub_settings()))
    except GatedRepoError:  # before RepositoryNotFoundError, its parent class
        raise GatedTaskError(f"{task.name}'s dataset {task.repo_id} is gated and this account may not read it yet",
                             hint=f"accept its terms at {task.url} (logged in), then set HF_TOKEN to a token of "
                                  "that account") from None
    except LocalEntryNotFoundError:
        raise TaskUnavailableError(f"{task.name} is not in the local Hugging Face cache and the Hub cannot be "
                                   "reached") from None
    except RepositoryNotFoundError:
        raise TaskUnavailableError(f"{task.name}'s dataset {task.repo_id} is not on the Hub (or it is private)",
                                   hint="set HF_TOKEN if it is private, or pass --task-file FILE") from None
    except (HfHubHTTPError, OSError) as e:
        raise TaskUnavailableError(f"downloading {task.name} from {task.repo_id} failed: "
                                   f"{str(e).splitlines()[0][:200]}",
                                   hint="run again: the download resumes where it stopped") from None


# ---- a user's file ------------------------------------------------------------------------------------------

TASK_FILE_SUFFIXES = (".jsonl", ".csv", ".parquet")


def read_rows(path: Path) -> list[dict]:
    """The rows of a .jsonl, .csv or .parquet file, as dicts of column → value (parquet values as stored)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path)
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets write a byte-order mark
            return list(csv.DictReader(f))
    if suffix == ".parquet":
        import pyarrow.lib
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except pyarrow.lib.ArrowException as e:
            raise TaskFileError(f"{path} is not a readable parquet file: {str(e).splitlines()[0][:200]}") from None
    raise TaskFileError(f"{path} is neither .jsonl, .csv nor .parquet")


def _jsonl_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskFileError(f"{path} line {number} is not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise TaskFileError(f"{path} line {number} is not a JSON object")
            rows.append(row)
    return rows


def read_task_file(path: str | Path, problem_column: str = "problem", answer_column: str = "answer",
                   id_column: str | None = None, kind: Kind = "math") -> list[Problem]:
    """A user's problems: one per row of a .jsonl, .csv or .parquet file. Each problem gets the math instruction
    (for `kind="choice"`, the letter instruction: the problem lists its choices A-D itself), as the Hub tasks do;
    its id is `id_column`'s value, else its row number (1 = the first problem)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    if kind not in KINDS:
        raise TaskFileError(f"unknown answer kind {kind!r}", hint=f"choose one of: {', '.join(KINDS)}")
    rows = read_rows(path)
    if not rows:
        raise TaskFileError(f"{path} holds no problems")
    columns = [problem_column, answer_column] + ([id_column] if id_column else [])
    for column in columns:
        if column not in rows[0]:
            raise TaskFileError(f"{path} has no column {column!r} (its columns: {', '.join(map(str, rows[0]))})")
    problems = []
    for number, row in enumerate(rows, 1):
        values = {}
        for column in columns:
            value = row.get(column)
            text = "" if value is None else str(value).strip()
            if not text:
                raise TaskFileError(f"{path} row {number} has an empty {column!r}")
            values[column] = text
        pid = values[id_column] if id_column else str(number)
        prompt = (math_prompt(values[problem_column]) if kind != "choice"
                  else f"{values[problem_column]}\n\n{CHOICE_INSTRUCTION}")
        problems.append(Problem(pid, prompt, values[answer_column], kind))
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise TaskFileError(f"{path}: the id {dup!r} appears more than once in {id_column!r}")
    return problems


def _field(row: dict, column: str, index: int) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise TaskFileError(f"row {index + 1} of the dataset has no {column!r}",
                            hint="the dataset file is not the one this task expects: delete it from the HF cache")
    return value if isinstance(value, str) else str(value)


# ---- arith: generated, offline -------------------------------------------------------------------------------

ARITH_LEVELS = (1, 2, 3, 4, 5)
_NAMES = ("Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lena",
          "Maya", "Noah", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq")
_ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "stamps", "cards", "eggs")


def _level1(r: random.Random) -> tuple[str, int]:
    a, b = r.randint(1, 5), r.randint(1, 5)
    return f"What is {a} + {b}?", a + b


def _level2(r: random.Random) -> tuple[str, int]:
    if r.random() < 0.5:
        a, b = r.randint(2, 9), r.randint(2, 9)
        return f"What is {a} + {b}?", a + b
    a = r.randint(5, 9)
    b = r.randint(1, a - 1)
    return f"What is {a} - {b}?", a - b


def _level3(r: random.Random) -> tuple[str, int]:
    a, b = r.randint(10, 49), r.randint(1, 9)
    return f"What is {a} + {b}?", a + b


def _level4(r: random.Random) -> tuple[str, int]:
    name, item = r.choice(_NAMES), r.choice(_ITEMS)
    a, b = r.randint(2, 9), r.randint(1, 5)
    if r.random() < 0.5:
        return f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?", a + b
    return f"{name} has {a + b} {item} and gives {b} of them away. How many {item} does {name} have left?", a


def _level5(r: random.Random) -> tuple[str, int]:
    name, item = r.choice(_NAMES), r.choice(_ITEMS)
    a, b, c = r.randint(3, 9), r.randint(3, 9), r.randint(2, 9)
    pick = r.randrange(4)
    if pick == 0:
        return f"{name} has {b} bags with {a} {item} in each bag. How many {item} does {name} have in all?", a * b
    if pick == 1:
        return (f"{name} buys {a} packs of {item} with {b} {item} in each pack, then gives {c} {item} to a "
                f"friend. How many {item} does {name} have now?"), a * b - c
    if pick == 2:
        d = r.randint(10, 30)
        return (f"{name} has {d} {item}, buys {a} more, and then buys {b} more. How many {item} does {name} "
                "have now?"), d + a + b
    price, count = r.randint(2, 9), r.randint(3, 9)
    money = price * count + r.randint(1, 20)
    return (f"{name} has {money} dollars and buys {count} {item} at {price} dollars each. How many dollars does "
            f"{name} have left?"), money - price * count


_LEVELS = {1: _level1, 2: _level2, 3: _level3, 4: _level4, 5: _level5}


# arith asks for the answer without asking for steps: greedy SmolLM2-135M-Instruct, told to "reason step by step",
# writes a right sum and then keeps "calculating" ("4 + 4 equals 8 … we subtract 4 from 8 … the answer is 2"):
# 5 of the first 40 problems right (12 %, 192 tokens); told only where to put its answer, 18 of 40 (45 %, 256
# tokens). An R1 model thinks first either way: its template opens the thought.
ARITH_INSTRUCTION = "Put your final answer within \\boxed{}."


def arith_problems(count: int = 200, seed: int = 0, instruction: str = ARITH_INSTRUCTION) -> list[Problem]:
    """`count` arithmetic and word problems with exact integer answers, levels 1-5 taken in turn (so that the
    first N of them are a mix of every level): sums of numbers up to 5; one-digit sums and differences; a
    two-digit number plus a one-digit one; one-step word problems; products and two-step word problems. The same
    seed gives the same problems on any machine. Easy on purpose: SmolLM2-135M, the embedded model, must land
    well away from 0 % and 100 % (greedy, 256 tokens, the first 40: levels 1-5 at 7, 7, 0, 3 and 1 of 8)."""
    r = random.Random(seed)
    problems = []
    for n in range(count):
        level = ARITH_LEVELS[n % len(ARITH_LEVELS)]
        question, answer = _LEVELS[level](r)
        problems.append(Problem(f"arith-{n:03d}", f"{question}\n{instruction}", str(answer), "number",
                                {"level": level}))
    return problems

