"""The budget: one type per tensor, the least total damage that fits.

Budget. A multiple-choice knapsack: minimise Σ error over one type per tensor, subject to Σ bytes ≤ budget.
We solve it by a Lagrangian sweep — for a price λ, each tensor independently takes the type minimising
error + λ·bytes; λ is bisected to the cheapest price whose total fits — which lands exactly on the convex hull
of the total (bytes, error) frontier and is optimal for the budget it spends. The gap it leaves (less than one
tensor's step on its own frontier) is then filled greedily: repeatedly take the upgrade with the largest error
reduction per byte that still fits. Why not exact dynamic programming: with hundreds of tensors and budgets of
gigabytes it needs a byte grid, and the hull solution is within one tensor's step of optimal anyway; the sweep is
milliseconds and easy to check.
"""
from __future__ import annotations

import math

from ..gguf.header import padded
from .damage import Option, TensorOptions


def _hull(options: list[Option], alignment: int) -> list[int]:
    """Indices of the lower convex hull of (padded bytes, error), by size: the only choices a price can pick."""
    pts = sorted(range(len(options)), key=lambda i: (padded(options[i].n_bytes, alignment), options[i].error))
    hull: list[int] = []
    for i in pts:
        if hull and options[i].error >= options[hull[-1]].error:
            continue  # bigger and no better
        while len(hull) >= 2:
            a, b = options[hull[-2]], options[hull[-1]]
            c = options[i]
            xa, xb, xc = (padded(o.n_bytes, alignment) for o in (a, b, c))
            if (b.error - a.error) * (xc - xa) >= (c.error - a.error) * (xb - xa):
                hull.pop()  # b lies on or above the line a–c
            else:
                break
        hull.append(i)
    return hull


def solve(tensors: list[TensorOptions], budget: int, alignment: int = 32) -> dict[str, int]:
    """Tensor name → index of its chosen option, with Σ padded bytes ≤ `budget` (see the module docstring).
    The caller checks beforehand that the smallest choice fits."""
    size = [[padded(o.n_bytes, alignment) for o in t.options] for t in tensors]
    hulls = [_hull(t.options, alignment) for t in tensors]

    def pick(lam: float) -> list[int]:
        return [min(h, key=lambda i, t=t, s=s: (t.options[i].error + lam * s[i], s[i]))
                for t, h, s in zip(tensors, hulls, size)]

    def total(choice: list[int]) -> int:
        return sum(s[i] for s, i in zip(size, choice))

    if total(pick(0.0)) <= budget:
        choice = pick(0.0)
    else:
        lo, hi = 0.0, 1.0
        while total(pick(hi)) > budget:
            hi *= 4
            if hi > 1e300:
                break
        for _ in range(200):  # bisect in log space between a price that overspends and one that fits
            mid = math.sqrt(lo * hi) if lo > 0 else hi / 1e6
            if total(pick(mid)) > budget:
                lo = mid
            else:
                hi = mid
            if lo > 0 and hi / lo < 1 + 1e-12:
                break
        choice = pick(hi)
    left = budget - total(choice)
    while True:  # greedy fill of what the hull step left
        best, best_gain = None, 0.0
        for k, (t, s) in enumerate(zip(tensors, size)):
            cur = choice[k]
            for i, o in enumerate(t.options):
                extra = s[i] - s[cur]
                if o.error < t.options[cur].error and extra <= left:
                    gain = (t.options[cur].error - o.error) / max(extra, 1)
                    if gain > best_gain:
                        best, best_gain = (k, i), gain
        if best is None:
            break
        k, i = best
        left -= size[k][i] - size[k][choice[k]]
        choice[k] = i
    return {t.name: i for t, i in zip(tensors, choice)}
