"""Grading an R1 output against a gold answer.

1. The answer part: the text after the last `</think>`. A thought that never closed (cut off by the token
   budget) has no answer, whatever drafts it holds, and is wrong. A box in a closed thought never counts, even
   when the answer part has none: the thought holds drafts the model went on to reject, and the answer part is
   what it commits to. This is lighteval's rule (the evaluation open-r1 ran on the R1 distills: its pipeline
   drops `<think>…</think>` before any metric, `remove_reasoning_tags=True` by default) and the format R1 was
   trained to (the final answer after the thought). Qwen2.5-Math's parser takes the last box of the whole
   output, which would let a draft in the thought count; it was written for models without a thought.
2. The answer in it: the LAST `\\boxed{…}` of the answer part ("first \\boxed{10}, but checking: \\boxed{12}"
   answers 12), as Qwen2.5-Math's `extract_answer` and math-verify (rightmost match first) read it. Boxes
   written as one list — joined to the last box by nothing but "and", "or" or a comma (math delimiters and an
   "x =" between them allowed: "$x = \\boxed{1}$ and $x = \\boxed{-2}$") — are read together, as math-verify
   does: for math they form a set (two roots match a gold "-2, 1"), for a number or a letter they must agree
   ("\\boxed{B} or \\boxed{C}" is a hedge, and wrong). With no box, the text after the last "the answer
   is" / "final answer:"; for a number, with neither, the last number written.
3. The verdict, by kind: "math" with math-verify (Hugging Face's verifier: the gold parsed first, then
   `verify(gold, answer)`, which is not symmetric); "number" as one exact number (commas, units, `$` and `%`
   dropped: GSM8K, arith); "choice" as a letter A-D (GPQA).

math-verify's own timeouts use SIGALRM, which works only on a main thread; it is called here without them, and
`Grader` runs it in worker processes instead, killing one that takes longer than its per-answer timeout (sympy
can take minutes on an adversarial expression). Such an answer is recorded as "timeout", and counts as wrong.
The workers exit when the process that started them is gone, so a SIGKILLed eval leaves no process behind.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from ..engine.reasoning import CLOSE, OPEN
from ..resources import Closeable

log = logging.getLogger(__name__)

Verdict = Literal["correct", "wrong", "no_answer", "timeout", "error"]
VERDICTS: tuple[str, ...] = ("correct", "wrong", "no_answer", "timeout", "error")
DEFAULT_TIMEOUT = 10.0  # seconds per answer; math-verify's own default is 5 s to parse plus 5 s to compare
PARENT_POLL = 0.2  # seconds between a worker's looks at whether the process that started it is still there


@dataclass(frozen=True)
class Grade:
    verdict: Verdict
    extracted: str | None  # the answer as found in the output (its final boxes' contents, joined by "; ")

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"


# ---- finding the answer -------------------------------------------------------------------------------------

def answer_part(text: str, thought_open: bool = True) -> str | None:
    """The answer of a whole generated text: what follows the last `</think>`. Without one, the thought never
    closed and there is no answer (None) — unless the text never opened a thought either (`thought_open=False`:
    the prompt did not force `<think>`), and then all of it is the answer."""
    if CLOSE in text:
        return text.rsplit(CLOSE, 1)[1]
    if thought_open or OPEN in text:
        return None
    return text


_BOX = re.compile(r"\\(?:boxed|fbox)\s*")


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, contents) of every box in `text`, in order."""
    found = []
    for m in _BOX.finditer(text):
        start = m.end()
        if start < len(text) and text[start] == "{":
            depth, i = 0, start
            while i < len(text):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        found.append((m.start(), i + 1, text[start + 1:i].strip()))
                        break
                i += 1
        elif m.group().endswith(" ") and (word := re.match(r"[^\s$.,;]+", text[start:])):
            found.append((m.start(), start + word.end(), word.group()))  # `\boxed 5`
    return found


def boxed(text: str) -> list[str]:
    """The contents of every `\\boxed{…}` (and `\\fbox{…}`, `\\boxed 5`) in `text`, in order, braces balanced."""
    return [contents for _, _, contents in _boxes(text)]


# what may stand between two boxes of one list: a closing and an opening math delimiter, "and" / "or" / a comma,
# and a variable the next box is the value of ("$x = \boxed{1}$ and $x = \boxed{-2}$"); math-verify's list rule
_DELIM = r"(?:\$\$?|\\[()\[\]])?"
_LIST_GAP = re.compile(rf"\s*{_DELIM}\s*,?\s*(?:and|or|,)\s*{_DELIM}\s*(?:[A-Za-z](?:_\{{?\w+\}}?)?\s*=\s*)?",
                       re.IGNORECASE)


def final_boxes(text: str) -> list[str]:
    """The final answer's boxes: the last non-empty box of `text`, with the boxes written as one list with it."""
    spans = [b for b in _boxes(text) if b[2]]
    if not spans:
        return []
    first = len(spans) - 1
    while first > 0 and _LIST_GAP.fullmatch(text, spans[first - 1][1], spans[first][0]):
        first -= 1
    return [contents for _, _, contents in spans[first:]]


# "The answer is 5.", "**Final Answer:** $\frac12$", "Answer: (C)"; the last one counts
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:)\s*:?\s*(?P<rest>[^\n]+)", re.IGNORECASE)


def answer_text(answer: str) -> str | None:
    """The text after the last "the answer is" / "final answer:" of an answer with no box, up to the line's
    end, without the sentence's closing period, markdown stars or math delimiters."""
    matches = list(_ANSWER_IS.finditer(answer))
    if not matches:
        return None
    rest = matches[-1]["rest"].strip().strip("*").strip()
    rest = re.sub(r"\s*\.$", "", rest)  # the sentence's period
    return _unwrap(rest).strip() or None


def extract(answer: str | None) -> list[str]:
    """The candidate answers of an answer part: its final boxes' contents, else the "the answer is" text, else
    none."""
    if answer is None:
        return []
    if boxes := final_boxes(answer):
        return boxes
    text = answer_text(answer)
    return [text] if text else []


# ---- verdicts -----------------------------------------------------------------------------------------------

def grade_answer(kind: str, gold: str, answer: str | None) -> Grade:
    """The verdict on one answer part (None: the thought never closed), in this process and without a timeout:
    `Grader` runs this in worker processes with one."""
    found = extract(answer)
    if not found and kind == "number" and answer and (last := last_number(answer)):
        found = [last]  # GSM8K's usual fallback ("flexible extract"): a small model rarely boxes, but says "2 + 3 = 5"
    if not found:
        return Grade("no_answer", None)
    shown = "; ".join(found)
    if kind == "math":
        return Grade("correct" if _math_equal(gold, found) else "wrong", shown)
    if kind == "number":
        return Grade("correct" if _same_value(found, number, gold) else "wrong", shown)
    if kind == "choice":
        return Grade("correct" if _same_value(found, letter, gold) else "wrong", shown)
    raise ValueError(f"unknown answer kind {kind!r}")


def _same_value(found: list[str], read, gold: str) -> bool:
    values = {read(f) for f in found}
    return len(values) == 1 and None not in values and values == {read(gold)}


_UNITS_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")


def number(text: str) -> Fraction | None:
    """The one number an answer states, exactly: "1,250" and "\\$1,250.00" are 1250, "18 \\text{ dollars}" is
    18, "\\frac{3}{4}" is 3/4, "5 \\times 12 = 60" is 60 (the last number written)."""
    t = _UNITS_TEXT.sub(r" \1 ", text)
    t = re.sub(r"\\[!,;: ]|\\?\$|\\?%|\\left|\\right", " ", t)
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)  # thousands separators
    t = re.sub(r"\\d?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}", r" \1/\2 ", t)
    fraction = list(re.finditer(r"(?<![\w.])(-?\d+)\s*/\s*(\d+)(?![\d.])", t))
    numbers = list(_NUMBER.finditer(t))
    if not numbers:
        return None
    if fraction and fraction[-1].end() >= numbers[-1].end() and int(fraction[-1][2]) != 0:
        return Fraction(int(fraction[-1][1]), int(fraction[-1][2]))
    return Fraction(numbers[-1].group())


def last_number(text: str) -> str | None:
    """The last number written in `text`, as written ("1,250", "-3", "2.5"), or None."""
    found = re.findall(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?![\d,])|(?<![\w.])-?\d+(?:\.\d+)?", text)
    return found[-1] if found else None


def letter(text: str) -> str | None:
    """The choice an answer names: "C", "(C)", "\\text{C}", "C) 42 m/s" and "c" are all C."""
    t = _UNITS_TEXT.sub(r"\1", text).strip().strip("*").strip()
    m = re.match(r"^\(?([A-Da-d])(?:\)|\.|:|\s|$)", t)
    return m[1].upper() if m else None


_MATH_CONFIG = None


def _math_configs():
    global _MATH_CONFIG
    if _MATH_CONFIG is None:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig

        logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns once that we turned its timeouts off
        _MATH_CONFIG = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return _MATH_CONFIG


def _math_equal(gold: str, found: list[str]) -> bool:
    from math_verify import parse, verify

    configs = _math_configs()
    # both sides boxed, so that math-verify reads them alike; the boxes of one list become one set, as math-verify
    # reads "\boxed{1} and \boxed{-2}"
    gold_parsed = parse(f"\\boxed{{{gold}}}", configs, parsing_timeout=None) or [gold]
    answer = " ".join(f"\\boxed{{{_unwrap(f)}}}" for f in found)
    answer_parsed = parse(answer, configs, parsing_timeout=None)
    if not answer_parsed:
        return False
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def _unwrap(text: str) -> str:
    """An answer's text without the math delimiters around it ("$\\frac12$" → "\\frac12")."""
    m = re.fullmatch(r"\s*(?:\$\$?|\\\(|\\\[)(.*?)(?:\$\$?|\\\)|\\\])\s*", text, re.DOTALL)
    return m[1] if m else text


# ---- many answers, each with a timeout ----------------------------------------------------------------------

def _watch_parent(parent: int) -> None:
    """A grading worker's initializer: exit as soon as `parent` (the process that started it) is gone. A killed
    parent never shuts its pool down, and a worker waiting for its next answer would wait forever.

    Not prctl(PR_SET_PDEATHSIG): that fires when the *thread* that started the worker ends, and workers are
    started from whichever thread grades first (asyncio's executor threads, which end with each model's run)."""
    if os.getppid() != parent:  # gone before we looked
        _exit_now()
    threading.Thread(target=_exit_with, args=(parent,), name="grader-parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:  # an orphan is adopted by init (or a subreaper): its parent pid changes
        time.sleep(PARENT_POLL)
    _exit_now()


def _exit_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as a parent-death signal would: no cleanup left to do in a worker


def _warm_up(grade_fn: Callable[[str, str, str | None], Grade]) -> None:
    """Import math-verify (and `grade_fn`'s module) in a new worker, and grade once, so that the first answer's
    timeout is not spent there."""
    grade_fn("math", "1", "\\boxed{1}")


class Grader(Closeable):
    """Grades answers in `workers` processes, each answer within `timeout` seconds. Thread-safe; use it as a
    context manager, or call `close()`.

        with Grader(workers=2) as grader:
            grades = grader.grade([("math", "\\frac12", "so \\boxed{0.5}"), ("number", "72", "… \\boxed{72}")])
    """

    def __init__(self, workers: int = 2, timeout: float = DEFAULT_TIMEOUT,
                 grade_fn: Callable[[str, str, str | None], Grade] = grade_answer):
        if workers < 1 or timeout <= 0:
            raise ValueError("a grader needs at least one worker and a positive timeout")
        self.workers = workers
        self.timeout = timeout
        self.grade_fn = grade_fn  # a module-level function: the workers import it by name
        self._lock = threading.Lock()
        self._pool: cf.ProcessPoolExecutor | None = None
        self.restarts = 0  # pools killed because an answer ran out of time

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def grade_one(self, kind: str, gold: str, answer: str | None) -> Grade:
        return self.grade([(kind, gold, answer)])[0]

    def grade(self, items: Sequence[tuple[str, str, str | None]]) -> list[Grade]:
        """The grades of (kind, gold, answer part) triples, in their order."""
        with self._lock:
            return self._grade(list(items))

    def _grade(self, items: list[tuple[str, str, str | None]]) -> list[Grade]:
        results: list[Grade | None] = [None] * len(items)
        todo = deque(range(len(items)))
        running: dict[cf.Future, tuple[int, float]] = {}  # future → (item, deadline)
        crashes = [0] * len(items)
        while todo or running:
            # no more answers in flight than workers, so that each starts when submitted and its clock is fair
            while todo and len(running) < self.workers:
                i = todo.popleft()
                future = self._executor().submit(self.grade_fn, *items[i])
                running[future] = (i, time.monotonic() + self.timeout)
            nearest = min(deadline for _, deadline in running.values())
            done, _ = cf.wait(running, timeout=max(0.0, nearest - time.monotonic()), return_when=cf.FIRST_COMPLETED)
            for future in done:
                i, _ = running.pop(future)
                try:
                    results[i] = future.result()
                except cf.process.BrokenProcessPool:  # a worker died under it (killed, or out of memory)
                    self._discard_pool()
                    crashes[i] += 1
                    if crashes[i] < 3:
                        todo.appendleft(i)  # perhaps another answer's worker died: grade it again
                    else:
                        log.warning("grading an answer killed its worker %d times; recorded as an error", crashes[i])
                        results[i] = Grade("error", "; ".join(extract(items[i][2])) or None)
                except Exception as e:  # a bug in math-verify on one odd answer must not stop an evaluation
                    log.warning("grading an answer failed (%s: %s); recorded as an error", type(e).__name__, e)
                    results[i] = Grade("error", "; ".join(extract(items[i][2])) or None)
            now = time.monotonic()
            late = [f for f, (_, deadline) in running.items() if deadline <= now]
            if late:
                for future in late:
                    i, _ = running.pop(future)
                    log.warning("grading an answer took over %.0f s; recorded as a timeout", self.timeout)
                    results[i] = Grade("timeout", "; ".join(extract(items[i][2])) or None)
                todo.extendleft(i for i, _ in reversed(list(running.values())))  # the others run again
                running.clear()
                self._kill_pool()
        return results  # type: ignore[return-value]

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a worker forked from a process holding llama.cpp's threads could deadlock, and a forkserver
            # is a process of its own that outlived a killed eval; spawned workers are the eval's children
            context = multiprocessing.get_context("spawn")
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_watch_parent,
                                                initargs=(os.getpid(),))
            # one warm-up per worker starts them all now, math-verify imported, before any clock runs
            list(cf.as_completed([self._pool.submit(_warm_up, self.grade_fn) for _ in range(self.workers)]))
        return self._pool

    def _kill_pool(self) -> None:
        """Kill the workers: one of them is stuck in an answer, and a process pool cannot stop one task."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self.restarts += 1
        for process in list(getattr(pool, "_processes", {}).values()):  # Python ≥ 3.14 has pool.kill_workers()
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
