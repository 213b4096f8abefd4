"""Selectors that fit a law to each curve and rank by the predicted loss at target.

* ``vanilla``   -- power law ``B D^-β + E`` on the sizes > 0 (Huber loss, δ = 0.001 in
  log space, as Lin et al. fitted it).
* ``rectified`` -- ``B / (D_l + D^β) + E`` on the zero-shot point and the sizes
  (least squares in log space, as both papers fit it).
* ``lensllm-paper`` -- the LensLLM law ``B / (F(Θ,t) + D^β) + E`` fitted as the paper
  describes: where a curve carries NTK measurements, F comes from its spectrum (mode
  ``measured``: F at the measured step count; mode ``fit-t``: t fitted); without NTK
  data F is a free positive parameter and the fit is exactly the rectified law.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from lensllm.core.curves import Curve, CurveSet
from lensllm.core.laws import FitResult, Law, LensLLMLaw, PowerLaw, RectifiedLaw
from lensllm.core.laws.fit import fit_curves
from lensllm.core.selectors.base import INTERVAL_GAMMA, Selection, Selector
from lensllm.core.selectors.settings import Setting, choice


def fit_points(curve: Curve, law: Law) -> tuple[np.ndarray, np.ndarray]:
    """The (size, loss) points a law is fitted on: zero-shot as D = 0 when it uses it."""
    if law.uses_zero_shot and curve.zero_shot is not None:
        return (np.concatenate([[0], curve.sizes]).astype(float),
                np.concatenate([[curve.zero_shot], curve.losses]))
    return curve.sizes.astype(float), curve.losses


class LawFitSelector(Selector):
    """Fit one law family per curve; score = predicted loss at the target."""

    score_label = "predicted loss"
    required_sizes = 3
    settings = (INTERVAL_GAMMA,)
    #: the loss of the fit (part of the method, not a setting): scipy's robust loss name
    #: and its scale in log loss
    robust: ClassVar[str] = "linear"
    f_scale: ClassVar[float] = 0.01

    def law_for(self, curve: Curve) -> Law:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, curves: CurveSet, target: int) -> list[FitResult]:
        """Fit every curve of a task (already restricted to the budget)."""
        return self.fit_many([(curves, target)])[0]

    def fit_curve(self, curve: Curve, target: float) -> tuple[Law, FitResult]:
        """The law this method fits to ``curve``, and the fit (as :meth:`fit` does it)."""
        law = self.law_for(curve)
        return law, self._fit_group(law, [curve], [float(target)])[0]

    def _fit_group(self, law: Law, curves: list[Curve], targets: list[float]
                   ) -> list[FitResult]:
        points = [fit_points(curve, law) for curve in curves]
        return fit_curves(law, [p[0] for p in points], [p[1] for p in points],
                          robust=self.robust, f_scale=self.f_scale, check_at=targets)

    def fit_many(self, requests: list[tuple[CurveSet, int]]) -> list[list[FitResult]]:
        """Fit the curves of many (task, target) requests; curves that share a law object
        are fitted in one batch, which is what makes the protocol fast."""
        jobs = [(r, i, self.law_for(curve), curve, target)
                for r, (curves, target) in enumerate(requests) for i, curve in enumerate(curves)]
        out: list[list[FitResult | None]] = [[None] * len(c) for c, _ in requests]
        groups: dict[int, list[tuple]] = {}
        for job in jobs:
            groups.setdefault(id(job[2]), []).append(job)
        for members in groups.values():
            results = self._fit_group(members[0][2], [m[3] for m in members],
                                      [float(t) for *_, t in members])
            for (r, i, *_), result in zip(members, results, strict=True):
                out[r][i] = result
        return out  # type: ignore[return-value]

    def _select_many(self, requests: list[tuple[CurveSet, int, int]]) -> list[Selection]:
        all_fits = self.fit_many([(curves, target) for curves, _, target in requests])
        selections = []
        for (curves, budget, target), fits in zip(requests, all_fits, strict=True):
            predicted = np.array([float(f.predict(target)) for f in fits])
            selections.append(self._selection(
                curves, budget, target, predicted, predicted=predicted,
                details={"fits": fits, "predict": lambda i, n, fits=fits: fits[i].predict(n)}))
        return selections

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        return self._select_many([(curves, budget, target)])[0]


class VanillaFit(LawFitSelector):
    name = "vanilla"
    robust = "huber"
    f_scale = 0.001
    _law = PowerLaw()

    def law_for(self, curve: Curve) -> Law:
        return self._law


class RectifiedFit(LawFitSelector):
    name = "rectified"
    needs_zero_shot = True
    _law = RectifiedLaw()

    def law_for(self, curve: Curve) -> Law:
        return self._law


class LensLLMPaperFit(RectifiedFit):
    """The LensLLM law as published; F from the NTK spectrum where curves carry one."""

    name = "lensllm-paper"
    uses_ntk = True
    settings = (*RectifiedFit.settings,
                Setting("mode", choice("measured", "fit-t"), "measured",
                        "with NTK data: F at the measured step count t, or t fitted "
                        "(measured falls back to fit-t where t was not recorded)"))

    def law_for(self, curve: Curve) -> Law:
        if curve.ntk is None:
            return self._law
        mode = self.mode
        if mode == "measured" and curve.ntk.steps is None:
            mode = "fit-t"
        return LensLLMLaw(ntk=curve.ntk, mode=mode)


#: the law-fit method behind each ``lensllm fit --law`` name
LAW_FITS: dict[str, type[LawFitSelector]] = {
    "lensllm": LensLLMPaperFit, "rectified": RectifiedFit, "vanilla": VanillaFit}
