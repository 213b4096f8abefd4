"""The selector interface and its result object.

A selector looks at a task's curves as they would be known under a data budget
(zero-shot loss, losses at sizes <= budget, parameter counts, NTK data), gives every
model a *score*, and picks the model with the best score.  Law-based selectors also
predict the loss at the target size, and some give an interval and P(best).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lensllm.core.curves import Curve, CurveSet
from lensllm.core.selectors.settings import Setting, check_names, format_value, number
from lensllm.errors import InputError

#: exponent of the back-tested error growth with the horizon (lensllm.core.uncertainty),
#: a setting of every loss-predicting selector; benchmarks/tune_intervals.py holds the
#: rule that chose the default
INTERVAL_GAMMA = Setting("interval_gamma", number(at_least=0), 1.65,
                         "growth exponent of the interval width with log2(target / budget)")


#: relative score difference below which two candidates tie (identical curves give
#: identical fits up to rounding)
TIE_TOLERANCE = 1e-9


@dataclass
class Selection:
    """What a selector decided for one task, budget and target.

    ``details`` holds method-specific extras; a predicting selector puts there
    ``predict(i, sizes)``, the loss it predicts for model ``i`` at any sizes (plots use
    it), and law-fit selectors their ``fits``.
    """

    method: str
    task: str
    budget: int
    target: int
    models: list[str]
    scores: np.ndarray
    predicted: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    p_best: np.ndarray | None = None
    higher_is_better: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    #: what makes this ranking less trustworthy than it looks (one line each: a single
    #: candidate, a tie, losses that rise with data); ``lensllm.select`` also issues
    #: them as Python warnings and the CLI prints them as ``warning:`` lines
    warnings: list[str] = field(default_factory=list)

    @property
    def order(self) -> np.ndarray:
        """Model indices from best to worst (ties keep the input order)."""
        key = -self.scores if self.higher_is_better else self.scores
        key = np.where(np.isfinite(key), key, np.inf)
        return np.argsort(key, kind="stable")

    @property
    def ranks(self) -> np.ndarray:
        ranks = np.empty(len(self.models), dtype=int)
        ranks[self.order] = np.arange(1, len(self.models) + 1)
        return ranks

    @property
    def chosen(self) -> str:
        return self.models[int(self.order[0])]

    @property
    def tied(self) -> list[str]:
        """The models whose score equals the leader's (just the leader when none does):
        among them the pick is arbitrary, the input order."""
        first = self.scores[int(self.order[0])]
        if not math.isfinite(first):
            return [self.chosen]
        return [self.models[i] for i in self.order
                if math.isfinite(self.scores[i])
                and math.isclose(self.scores[i], first, rel_tol=TIE_TOLERANCE)]

    def to_records(self) -> list[dict[str, Any]]:
        rows = []
        ranks = self.ranks
        for i in self.order:
            row: dict[str, Any] = {"rank": int(ranks[i]), "model": self.models[i],
                                   "score": float(self.scores[i])}
            if self.predicted is not None:
                row["predicted"] = float(self.predicted[i])
            for name in ("lower", "upper", "p_best"):
                values = getattr(self, name)
                if values is not None:
                    value = float(values[i])
                    row[name] = value if math.isfinite(value) else None
            rows.append(row)
        return rows

    def to_frame(self):
        """The ranking as a pandas DataFrame (best first)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.to_records())


class Selector(ABC):
    """Scores every candidate of a task from what is known under a budget.

    Settings are declared once per class in :attr:`settings`; ``Selector(**settings)``
    and :meth:`set_params` validate them, :meth:`get_params` returns them, and the
    label shows the ones that were set (``ats[k=4]``).  They read as attributes
    (``selector.k``); assigning one goes through :meth:`set_params`.
    """

    name: ClassVar[str] = "selector"
    #: the settings this method takes (name, rule, default, help)
    settings: ClassVar[tuple[Setting, ...]] = ()
    #: what the score is, for people reading a ranking
    score_label: ClassVar[str] = "score"
    needs_zero_shot: ClassVar[bool] = False
    needs_params: ClassVar[bool] = False
    #: fewest measured sizes (> 0, <= budget) each curve must have
    required_sizes: ClassVar[int] = 0
    #: most candidates one ranking may hold (None: no limit); a method whose time and
    #: memory grow faster than the count states its limit instead of running for hours
    max_candidates: ClassVar[int | None] = None
    higher_is_better: ClassVar[bool] = False
    #: whether the score is a predicted loss at the target (False: a ranking score only)
    predicts_loss: ClassVar[bool] = True
    #: whether the method reads the curves' NTK spectra (``lensllm run`` measures them
    #: under ``ntk: {enabled: auto}`` only for such a method)
    uses_ntk: ClassVar[bool] = False
    #: whether the method reads Hessian measurements (``hessian: {enabled: auto}``)
    uses_hessian: ClassVar[bool] = False

    def __init__(self, **settings: Any) -> None:
        # Values live in a dict, not as attributes, so that every write goes through
        # set_params' validation.
        object.__setattr__(self, "_values", {s.name: s.default for s in self.settings})
        self.set_params(**settings)

    def get_params(self) -> dict[str, Any]:
        """The settings, in declaration order (a copy)."""
        return dict(self._values)

    def set_params(self, **settings: Any) -> Selector:
        """Validate and set some settings; returns the selector."""
        check_names(self.settings, list(settings), self.name)
        declared = {s.name: s for s in self.settings}
        converted = {k: declared[k].convert(v, self.name) for k, v in settings.items()}
        # A new dict, so that a shallow copy of a selector keeps its own settings.
        object.__setattr__(self, "_values", {**self._values, **converted})
        named = self._named + tuple(k for k in converted if k not in self._named)
        object.__setattr__(self, "_named", named)
        return self

    @property
    def label(self) -> str:
        """The name plus the settings that were set or differ from their default, as
        written in a method spec (``ats[k=4,delta=2]``); the spec builds this selector."""
        defaults = {s.name: s.default for s in self.settings}
        shown = [*self._named, *(k for k, v in self._values.items()
                                 if k not in self._named and v != defaults[k])]
        if not shown:
            return self.name
        return (f"{self.name}["
                + ",".join(f"{k}={format_value(self._values[k])}" for k in shown) + "]")

    #: the settings named explicitly, in order (the label shows them even at their default)
    _named: tuple[str, ...] = ()

    def __getattr__(self, key: str) -> Any:
        values = self.__dict__.get("_values")
        if values is None:  # a subclass __init__ that did not call Selector.__init__
            values = {s.name: s.default for s in self.settings}
        if key == "_values":
            return values
        if key in values:
            return values[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if any(s.name == key for s in self.settings):
            self.set_params(**{key: value})
        else:
            object.__setattr__(self, key, value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    def select(self, curves: CurveSet, budget: int, target: int, *,
               uncertainty: bool = False, level: float = 0.9) -> Selection:
        """Score the curves seen under ``budget`` and rank them for ``target``."""
        return self.select_many([(curves, budget, target)], uncertainty=uncertainty,
                                level=level)[0]

    def select_many(self, requests: list[tuple[CurveSet, int, int]], *,
                    uncertainty: bool = False, level: float = 0.9) -> list[Selection]:
        """:meth:`select` for many (curves, budget, target) at once.

        Selectors whose work vectorises (law fits) override :meth:`_select_many`.
        With ``uncertainty``, predicting selectors also get ``level`` intervals and
        P(best) from back-testing (see :mod:`lensllm.core.uncertainty`).
        """
        visible = []
        for curves, budget, target in requests:
            check_budget(budget, target)
            self.check_curves(curves, budget)
            visible.append((curves.within(budget), budget, target))
        selections = self._select_many(visible)
        for selection, (seen, _, _) in zip(selections, visible, strict=True):
            selection.higher_is_better = self.higher_is_better
            selection.method = self.label
            selection.warnings = degenerate_warnings(seen, selection)
        if uncertainty:
            self._add_uncertainty(visible, selections, level)
        return selections

    def check_curves(self, curves: CurveSet, budget: int) -> None:
        """Raise :class:`InputError`, saying what is missing, unless this selector can
        rank ``curves`` from the sizes up to ``budget``."""
        self._check_count(curves)
        for curve in curves.within(budget):
            self._check_curve(curve, budget, curves.task)

    def _add_uncertainty(self, requests: list[tuple[CurveSet, int, int]],
                         selections: list[Selection], level: float) -> None:
        from lensllm.core.uncertainty import (
            PBEST_LEVEL,
            conformal_interval,
            conformal_models,
            probability_best,
        )

        if not (0 < level < 1):
            raise InputError(f"interval level must be between 0 and 1, got {level}")
        if any(s.predicted is None for s in selections):
            return  # scores that are not predictions have no interval

        def predictor(pseudo):
            return [s.predicted for s in self._select_many(pseudo)]

        gamma = self._values.get(INTERVAL_GAMMA.name, INTERVAL_GAMMA.default)
        models = conformal_models(predictor, requests, max(self.required_sizes, 2), gamma)
        for selection, model, (_, budget, target) in zip(selections, models, requests,
                                                         strict=True):
            horizon = math.log2(target / budget)
            selection.lower, selection.upper = conformal_interval(selection.predicted, model,
                                                                  horizon, level)
            selection.p_best = probability_best(selection.predicted,
                                                model.sd_rel_at(horizon, PBEST_LEVEL))
            selection.details["error_model"] = model
            selection.details["level"] = level

    def _select_many(self, requests: list[tuple[CurveSet, int, int]]) -> list[Selection]:
        return [self._select(*request) for request in requests]

    def _check_count(self, curves: CurveSet) -> None:
        if self.max_candidates is not None and len(curves) > self.max_candidates:
            raise InputError(
                f"{curves.task}: {len(curves):,} candidates; the {self.name} method ranks at "
                f"most {self.max_candidates:,} at once (its time and memory grow faster than "
                "the count); rank a subset (e.g. one family) or use ats"
            )

    def _check_curve(self, curve: Curve, budget: int, task: str) -> None:
        if self.needs_zero_shot and curve.zero_shot is None:
            raise InputError(
                f"{task}: model {curve.model!r} has no zero-shot loss (size 0); "
                f"the {self.name} method needs it"
            )
        if self.needs_params and curve.params is None:
            raise InputError(
                f"{task}: model {curve.model!r} has no parameter count; the {self.name} "
                "method needs it (column 'size' in wide files, 'params' in long files)"
            )
        if len(curve) < self.required_sizes:
            seen = ", ".join(str(int(n)) for n in curve.sizes) or "none"
            raise InputError(
                f"{task}: model {curve.model!r} has {len(curve)} measured size(s) <= budget "
                f"{budget} ({seen}); the {self.name} method needs at least {self.required_sizes}"
            )

    @abstractmethod
    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        """Score curves already restricted to the budget and validated."""

    def _selection(self, curves: CurveSet, budget: int, target: int, scores: np.ndarray,
                   **extra: Any) -> Selection:
        return Selection(method=self.name, task=curves.task, budget=int(budget),
                         target=int(target), models=curves.models,
                         scores=np.asarray(scores, dtype=float), **extra)


def check_budget(budget: int, target: int) -> None:
    if budget <= 0:
        raise InputError(f"budget must be a positive number of examples, got {budget}")
    if target <= 0:
        raise InputError(f"target must be a positive number of examples, got {target}")
    if budget >= target:
        raise InputError(
            f"budget ({budget}) must be smaller than the target ({target}): the point is to "
            "predict the loss at a data size you have not trained on"
        )


def rising_curves(curves: CurveSet) -> list[tuple[str, float, float, float, float]]:
    """Curves whose loss grows with the data (least-squares slope of log loss on log
    size above zero, over at least 2 sizes): (model, first size, its loss, last size,
    its loss)."""
    out = []
    for curve in curves:
        sizes, losses = curve.sizes.astype(float), curve.losses
        keep = (sizes > 0) & np.isfinite(losses) & (losses > 0)
        if keep.sum() < 2:
            continue
        x, y = np.log(sizes[keep]), np.log(losses[keep])
        slope = float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else 0.0
        if slope > 0:
            out.append((curve.model, float(sizes[keep][0]), float(losses[keep][0]),
                        float(sizes[keep][-1]), float(losses[keep][-1])))
    return out


def degenerate_warnings(curves: CurveSet, selection: Selection) -> list[str]:
    """One line per reason a ranking is weaker than its numbers suggest."""
    out = []
    if len(selection.models) == 1:
        out.append(f"{selection.task}: only one candidate ({selection.chosen}): there is "
                   "nothing to choose between, so its P(best) of 1 says nothing")
    tied = selection.tied
    if len(tied) > 1:
        shown = ", ".join(tied[:5]) + (f" and {len(tied) - 5:,} more" if len(tied) > 5 else "")
        out.append(f"{selection.task}: {shown} tie on the {selection.method} score "
                   f"({float(selection.scores[selection.models.index(tied[0])]):.6g}): the "
                   f"pick of {selection.chosen} among them is arbitrary (input order)")
    for model, n0, l0, n1, l1 in rising_curves(curves):
        out.append(f"{selection.task}: {model}: the loss rises with data ({l0:.4g} at "
                   f"{n0:,.0f} to {l1:.4g} at {n1:,.0f}); a scaling law assumes it falls, so "
                   "check the curve file (a wrong column, or a metric where higher is better)")
    return out
