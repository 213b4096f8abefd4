"""Selection-quality metrics and the papers' benchmark protocol.

* **PearCorr** -- Pearson correlation (x100) between a method's per-model score and the
  true loss at the target.  Scores are what the method ranks by (predicted loss,
  zero-shot loss, loss at budget, log parameters), as in both papers.
* **RelAcc** -- ``(L_worst - L_selected) / (L_worst - L_best)`` x100 on the true loss at
  the target.
* **RMSE** and **MAPE** (%) of the predicted loss at the target, for methods that
  predict one.

The protocol runs every method at every budget (default: target/8 ... target/512) on
every task and reports one :class:`Cell` per (task, method, budget).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from lensllm.core.benchmark import ratio_label
from lensllm.core.curves import CurveSet
from lensllm.core.selectors import Selection, Selector, make_selector
from lensllm.errors import InputError

DEFAULT_RATIOS = (8, 16, 32, 64, 128, 256, 512)


def pearcorr(scores: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation x100; NaN when either side is constant."""
    s = np.asarray(scores, dtype=float)
    t = np.asarray(truth, dtype=float)
    ds, dt = s - s.mean(), t - t.mean()
    denom = math.sqrt(float((ds * ds).sum() * (dt * dt).sum()))
    return 100.0 * float((ds * dt).sum()) / denom if denom > 0 else math.nan


def relacc(selected_loss: float, truth: np.ndarray) -> float:
    """Relative accuracy x100 of a selection; NaN (undefined: 0/0) when every model has
    the same true loss, one model included -- see :func:`undefined_metrics`."""
    worst, best = float(np.max(truth)), float(np.min(truth))
    if worst == best:
        return math.nan
    return 100.0 * (worst - selected_loss) / (worst - best)


def undefined_metrics(task: str, truth: np.ndarray) -> list[str]:
    """Why PearCorr and RelAcc are null on a task, one line each (none when defined)."""
    if truth.size == 1:
        return [f"{task}: one model only: RelAcc and PearCorr are undefined (null); "
                "there is no choice to score"]
    if float(np.max(truth)) == float(np.min(truth)):
        return [f"{task}: every model has the same true loss at the target: RelAcc and "
                "PearCorr are undefined (null)"]
    return []


def rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - truth) ** 2)))


def mape(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(100.0 * np.mean(np.abs(np.asarray(predicted) - truth) / truth))


@dataclass(frozen=True)
class Cell:
    """Scores of one method on one task at one budget (the JSON schema of bench)."""

    task: str
    method: str
    budget: int
    target: int
    ratio: str
    pearcorr: float
    relacc: float
    rmse: float | None
    mape: float | None

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("pearcorr", "relacc", "rmse", "mape"):
            if out[key] is not None and not math.isfinite(out[key]):
                out[key] = None
        return out


def score_selection(selection: Selection, truth: np.ndarray) -> Cell:
    chosen = selection.models.index(selection.chosen)
    has_pred = selection.predicted is not None
    return Cell(
        task=selection.task, method=selection.method, budget=selection.budget,
        target=selection.target, ratio=ratio_label(selection.budget, selection.target),
        pearcorr=pearcorr(selection.scores, truth),
        relacc=relacc(float(truth[chosen]), truth),
        rmse=rmse(selection.predicted, truth) if has_pred else None,
        mape=mape(selection.predicted, truth) if has_pred else None,
    )


class Evaluation:
    """Cells of a protocol run plus the selections behind them."""

    def __init__(self, cells: list[Cell], selections: list[Selection],
                 warnings: list[str] | None = None) -> None:
        self.cells = cells
        self.selections = selections
        #: undefined metrics and weak rankings, one line each, without repeats
        self.warnings = list(dict.fromkeys(
            [*(warnings or []), *(w for s in selections for w in s.warnings)]))

    def to_records(self) -> list[dict]:
        return [c.to_dict() for c in self.cells]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.to_records(), columns=list(Cell.__annotations__))

    def get(self, task: str, method: str, budget: int) -> Cell:
        for cell in self.cells:
            if (cell.task, cell.method, cell.budget) == (task, method, budget):
                return cell
        raise KeyError((task, method, budget))

    def mean(self, method: str, metric: str) -> float:
        values = [getattr(c, metric) for c in self.cells if c.method == method]
        values = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else math.nan

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(c.method for c in self.cells))

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(c.task for c in self.cells))


def default_budgets(target: int, ratios: Sequence[int] = DEFAULT_RATIOS,
                    tasks: Sequence[CurveSet] = (), min_sizes: int = 3) -> list[int]:
    """target/8 ... target/512 (the papers' protocol), when ``tasks`` (if given) have
    measured them all with ``min_sizes`` sizes at or below each; otherwise the budgets
    the files can serve: every size that every model has measured, between target/512
    and target/2, that leaves each model ``min_sizes`` sizes (a law's three points).
    A file measured at sizes of its own (100, 200, ... for a target of 3,200) thus gets
    budgets from those sizes, never below the smallest one."""
    ratio_budgets = [target // r for r in ratios if target // r > 0]
    if not tasks:
        return ratio_budgets
    common: set[int] | None = None
    for task in tasks:
        for curve in task:
            sizes = {int(n) for n in curve.sizes if n > 0}
            common = sizes if common is None else common & sizes
    common = common or set()

    def serves(n: int) -> bool:
        return all(len(curve.within(n)) >= min_sizes for task in tasks for curve in task)

    if all(n in common and serves(n) for n in ratio_budgets):
        return ratio_budgets
    lowest = target / max(ratios)
    out = [n for n in sorted(common, reverse=True) if lowest <= n <= target / 2 and serves(n)]
    if not out:
        sizes = sorted(common)
        raise InputError(
            f"no default budget fits the target {target:,}: the sizes every model has "
            f"measured ({', '.join(f'{n:,}' for n in sizes) or 'none'}) leave none between "
            f"target/{max(ratios)} and target/2 with {min_sizes} sizes at or below it; "
            "give --budgets")
    return out


def usable_methods(tasks: Sequence[CurveSet], methods: Sequence[str | Selector],
                   budgets: Sequence[int]) -> tuple[list[Selector], list[str]]:
    """The methods whose needs every curve meets at every budget, and one note per method
    left out, in the selector's own words (a file without parameter counts cannot rank
    by model size)."""
    kept, notes = [], []
    for method in methods:
        selector = make_selector(method)
        try:
            for task in tasks:
                selector.check_curves(task, min(budgets))
        except InputError as error:
            notes.append(f"skipped {selector.label}: {error}")
        else:
            kept.append(selector)
    return kept, notes


def evaluate(
    curves: CurveSet | Mapping[str, CurveSet] | Iterable[CurveSet],
    methods: Sequence[str | Selector] = ("ats",),
    budgets: Sequence[int] | None = None,
    target: int | None = None,
) -> Evaluation:
    """Run the protocol: every method x budget on every task; one Cell each.

    Every model must have its true loss measured at ``target``.
    """
    if isinstance(curves, CurveSet):
        tasks = [curves]
    elif isinstance(curves, Mapping):
        tasks = list(curves.values())
    else:
        tasks = list(curves)
    if target is None:
        raise InputError("evaluate needs the target size (the data size to predict)")
    budgets = (list(budgets) if budgets is not None
               else default_budgets(target, tasks=tasks,
                                    min_sizes=max(make_selector(m).required_sizes
                                                  for m in methods)))
    selectors = [make_selector(m) for m in methods]
    names = [s.label for s in selectors]
    if len(set(names)) != len(names):
        raise InputError(f"a method is listed twice: {', '.join(names)}")
    truths = {id(task): task.losses_at(
        target, "evaluation needs every model's true loss at the target") for task in tasks}
    requests = [(task, budget, target) for task in tasks for budget in budgets]
    by_method = [selector.select_many(requests) for selector in selectors]
    notes = [w for task in tasks for w in undefined_metrics(task.task, truths[id(task)])]
    cells, selections = [], []
    for r, (task, _, _) in enumerate(requests):
        for per_method in by_method:
            selection = per_method[r]
            selections.append(selection)
            cells.append(score_selection(selection, truths[id(task)]))
    return Evaluation(cells, selections, notes)


@dataclass(frozen=True)
class CoverageCell:
    """Share (x100) of true target losses inside a method's stated interval; NaN (with
    the width) where the method stated none: too few sizes under the budget to
    back-test an interval (three, as the zoo suite has at target/64)."""

    task: str
    method: str
    budget: int
    ratio: str
    level: float
    coverage: float
    mean_width: float  # mean of upper/lower - 1 (relative width of the interval)


def calibration(
    curves: CurveSet | Iterable[CurveSet],
    method: str | Selector = "lensllm",
    budgets: Sequence[int] | None = None,
    target: int | None = None,
    level: float = 0.9,
) -> list[CoverageCell]:
    """How often the true loss at the target falls inside the ``level`` interval."""
    tasks = [curves] if isinstance(curves, CurveSet) else list(curves)
    if target is None:
        raise InputError("calibration needs the target size")
    budgets = list(budgets) if budgets is not None else default_budgets(target)
    selector = make_selector(method)
    requests = [(task, budget, target) for task in tasks for budget in budgets]
    selections = selector.select_many(requests, uncertainty=True, level=level)
    out = []
    for (task, budget, _), sel in zip(requests, selections, strict=True):
        if sel.lower is None:
            raise InputError(f"method {selector.label!r} does not predict losses, so it has "
                             "no intervals to calibrate")
        truth = task.losses_at(target, "calibration needs every model's true loss")
        stated = np.isfinite(sel.lower) & np.isfinite(sel.upper)
        inside = (truth >= sel.lower) & (truth <= sel.upper)
        coverage, width = math.nan, math.nan
        if stated.any():  # else no interval: a 0 % coverage would blame the method
            coverage = 100.0 * float(inside[stated].mean())
            width = float(np.mean(sel.upper[stated] / sel.lower[stated] - 1.0))
        out.append(CoverageCell(task.task, selector.label, budget, ratio_label(budget, target),
                                level, coverage, width))
    return out
