"""What `estimate-memory --target-size/--target-bpw` shows, as data: each budget's plan, and beside them the damage
of the standard ladder's types by the same measure, so a table and a JSON document are made from one result."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError
from ..quant_types import LADDER
from .mixes import Plan, Target


@dataclass(frozen=True)
class RungDamage:
    """A standard file type of the same base: its size and its damage (None where a type it uses was not
    measured, e.g. an IQ type without an imatrix)."""

    type: str
    file_bytes: int
    bits_per_weight: float
    damage: float | None


@dataclass
class BudgetPlans:
    plans: list[Plan]  # one per budget, in the order given
    ladder: list[RungDamage]  # the standard types, smallest first


def budget_base(target: str | Path) -> Path:
    """The base a budget mix is planned from: a local float GGUF, or a one-line refusal."""
    from .file import check_float_base

    path = Path(target)
    if path.suffix != ".gguf" or not path.is_file():
        raise InvalidArgumentError(f"a budget mix is planned from a local float GGUF, not {str(target)!r}",
                                   hint="quantkit convert SOURCE --outtype F16 first, then plan from its file")
    check_float_base(path)
    return path


def plan_budgets(base: Path, budgets: list[Target], imatrix: Path | None = None,
                 calibrate: str | None = None) -> BudgetPlans:
    """Each budget's plan of `base` (checked by `budget_base`; `imatrix` an importance matrix file, resolved),
    and the standard ladder's damage by the same measure; with `calibrate` (a scoring dataset's name) both in
    predicted KLD (calibrate.py)."""
    from .calibrate import calibrate_on, calibrated, check_dataset
    from .damage import measure
    from .mixes import importance_for, plan_mix

    if calibrate is not None:
        check_dataset(calibrate)
    values = importance_for(imatrix, base)
    measured = measure(base, values)
    calibration = None
    if calibrate is not None:
        calibration = calibrate_on(base, measured, values, calibrate)
    imatrix_name = Path(imatrix).name if imatrix else None
    plans = [plan_mix(base, b, values, imatrix_name=imatrix_name, measured=measured, calibration=calibration)
             for b in budgets]
    shown = calibrated(measured, calibration) if calibration is not None else measured
    return BudgetPlans(plans, _ladder_damage(base, shown, values is not None))


def _ladder_damage(base: Path, measured, has_imatrix: bool) -> list[RungDamage]:
    from ..memory import estimate_memory, weights_plan
    from ..memory.shapes import resolve_target
    from .mixes import standard_error

    spec = resolve_target(str(base))
    sizes = {t.type: t for t in estimate_memory(spec, list(LADDER)).types}
    return [RungDamage(qtype, sizes[qtype].file_bytes, sizes[qtype].bits_per_weight,
                       standard_error(measured, {p.name: p.type for p in weights_plan(spec, qtype, has_imatrix)}))
            for qtype in LADDER]
