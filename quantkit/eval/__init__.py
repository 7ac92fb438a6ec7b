"""`quantkit eval`'s library: tasks (data), grading, statistics and the samples file of a resumable run.

Nothing here loads a model: the runner that generates (on the engine, or against an endpoint) passes its
outputs in as text and numbers.
"""
from .grading import Grade, Grader, answer_part, extract, grade_answer
from .records import RecordWriter, Sample, done_keys, read_samples
from .stats import Difference, Estimate, Summary, paired_difference, pass_at_1, summarize
from .tasks import ARITH, HUB_TASKS, TASK_NAMES, Problem, arith_problems, load_task, read_task_file

__all__ = ["ARITH", "HUB_TASKS", "TASK_NAMES", "Difference", "Estimate", "Grade", "Grader", "Problem",
           "RecordWriter", "Sample", "Summary", "answer_part", "arith_problems", "done_keys", "extract",
           "grade_answer", "load_task", "paired_difference", "pass_at_1", "read_samples", "read_task_file",
           "summarize"]
