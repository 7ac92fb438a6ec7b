"""The report's rule for which rung to use on a GPU, on a ladder where each GPU size holds only some rungs: the
rung must fit whole (its `fits_gib` at that size), the base is never a candidate, and among the rungs that fit
the lowest mean KLD wins (without KLD figures, the largest)."""
from __future__ import annotations

from types import SimpleNamespace

from quantkit.job.facts import chat_rung
from quantkit.share.report import recommend

GIB = 2**30


def _row(qtype: str, size_gib: float, mean_kld: float | None, fits_from: int | None, is_base: bool = False) -> dict:
    """A report row whose file fits whole on every GPU of `fits_from` GiB or more (None: on none)."""
    sizes = (4, 8, 12, 16, 24, 48, 80)
    return {"type": qtype, "is_base": is_base, "size_bytes": int(size_gib * GIB), "mean_kld": mean_kld,
            "fits_gib": {g: fits_from is not None and g >= fits_from for g in sizes}}


# the closer a rung is to the base, the more memory it needs: every size has a different answer
LADDER = [
    _row("F16", 15.0, 0.0, 24, is_base=True),
    _row("Q8_0", 8.0, 0.001, 16),
    _row("Q6_K", 6.2, 0.004, 12),
    _row("Q4_K_M", 4.6, 0.03, 8),
    _row("Q2_K", 3.0, 0.4, 8),
]


def test_each_gpu_gets_the_closest_rung_that_fits_whole():
    assert {g: recommend(LADDER, g) for g in (4, 8, 12, 16, 24, 48, 80)} == {
        4: None, 8: "Q4_K_M", 12: "Q6_K", 16: "Q8_0", 24: "Q8_0", 48: "Q8_0", 80: "Q8_0"}


def test_a_rung_that_does_not_fit_is_no_candidate_even_when_listed_first():
    rows = [LADDER[0], _row("Q8_0", 8.0, 0.001, None), _row("Q4_K_M", 4.6, 0.03, 8)]
    assert recommend(rows, 80) == "Q4_K_M"
    assert recommend([LADDER[0], _row("Q8_0", 8.0, 0.001, None)], 80) is None  # the base alone is never chosen


def test_without_kld_the_largest_rung_that_fits():
    rows = [{**r, "mean_kld": None} for r in LADDER]
    assert {g: recommend(rows, g) for g in (4, 8, 12, 16, 80)} == {
        4: None, 8: "Q4_K_M", 12: "Q6_K", 16: "Q8_0", 80: "Q8_0"}


def test_without_memory_figures_nothing_is_recommended():
    rows = [{k: v for k, v in r.items() if k != "fits_gib"} for r in LADDER]
    assert recommend(rows, 80) is None


def test_chat_uses_the_rung_of_the_smallest_gpu_with_one():
    recommended = {g: recommend(LADDER, g) for g in (8, 12, 16, 24, 48, 80)}
    assert chat_rung(SimpleNamespace(rows=LADDER, recommended=recommended)) == "Q4_K_M"
    # 8 GB holds nothing: the next size's choice
    recommended[8] = None
    assert chat_rung(SimpleNamespace(rows=LADDER, recommended=recommended)) == "Q6_K"
    # no GPU holds a rung: the smallest rung, on the CPU
    assert chat_rung(SimpleNamespace(rows=LADDER, recommended={g: None for g in recommended})) == "Q2_K"
