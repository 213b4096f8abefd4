"""Uncertainty of predicted losses: intervals and P(best) from back-testing.

Curve-fit standard errors measure noise, not the error that matters here -- the law
being wrong about the part of the curve nobody has measured.  So lensllm measures how
wrong the *same predictor* is on the curves it already has: with the data budget cut to
budget/2, budget/4, ... it predicts the loss at the largest measured size, for every
candidate of the task at once.  That gives the prediction error at horizons of 1, 2, ...
doublings; its root mean square grows roughly like a power of the horizon, which is
extrapolated to the real horizon (target/budget):

    rmse(H) = s * H**gamma,   H = log2(target / budget),  s fitted to the back-tests.

* Interval: ``pred * exp(± z * rmse(H))`` in log space (z from the level, e.g. 1.645 for
  90 %).  The RMSE includes any bias the back-tests show, so a predictor that is off in
  the same direction for every candidate gets wider intervals.
* P(best): only errors *relative to the other candidates* change the ranking.  The
  back-test errors minus their mean across candidates give a relative error scale
  ``sd_rel(H)`` (extrapolated the same way); with independent normal errors of that
  scale in log space, P(best) is computed by exact one-dimensional quadrature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from lensllm.core.curves import CurveSet

#: a predictor: (curves restricted to the budget, budget, target) -> predicted losses
Predictor = Callable[[list[tuple[CurveSet, int, int]]], list[np.ndarray]]


@dataclass(frozen=True)
class ErrorModel:
    """Back-tested prediction error of one (task, budget): log-space scales per horizon."""

    horizons: np.ndarray  # log2 of the back-test horizons (1, 2, ...)
    rmse: np.ndarray  # RMS log error at each back-test horizon
    sd_rel: np.ndarray  # RMS of errors relative to the cross-candidate mean
    gamma: float

    def _extrapolate(self, values: np.ndarray, horizon: float) -> float:
        if self.horizons.size == 0:
            return math.nan
        k = self.horizons**self.gamma
        scale = float((values * k).sum() / (k * k).sum())
        return scale * horizon**self.gamma

    def rmse_at(self, horizon: float) -> float:
        """RMS log error expected ``horizon`` doublings beyond the budget."""
        return self._extrapolate(self.rmse, horizon)

    def sd_rel_at(self, horizon: float) -> float:
        return self._extrapolate(self.sd_rel, horizon)


@dataclass(frozen=True)
class Backtest:
    """One back-test: the request with the budget cut, and the losses it must predict."""

    request: tuple[CurveSet, int, int]
    steps: int  # doublings between the pseudo budget and the pseudo target
    truth: np.ndarray


def backtests(curves: CurveSet, budget: int, min_points: int,
              max_steps: int = 4) -> list[Backtest]:
    """Back-tests that cut the budget by 2, 4, ... (at most ``max_steps`` doublings).

    The pseudo target is the largest size <= budget that every candidate has measured;
    each pseudo budget must leave every candidate ``min_points`` sizes.
    """
    seen = curves.within(budget)
    common = set(seen[0].sizes.tolist())
    for curve in seen:
        common &= set(curve.sizes.tolist())
    if not common:
        return []
    pseudo_target = int(max(common))
    truth = seen.losses_at(pseudo_target, "back-testing needs it")
    out = []
    for step in range(1, max_steps + 1):
        pseudo_budget = pseudo_target // 2**step
        cut = seen.within(pseudo_budget)
        if min(len(c) for c in cut) < max(min_points, 2):
            break
        out.append(Backtest((cut, pseudo_budget, pseudo_target), step, truth))
    return out


def error_models(predictor: Predictor, requests: Sequence[tuple[CurveSet, int, int]],
                 min_points: int, gamma: float = 1.0) -> list[ErrorModel]:
    """Back-test ``predictor`` for every request (one batched predictor call)."""
    plans = [backtests(c, b, min_points) for c, b, _ in requests]
    flat = [bt.request for plan in plans for bt in plan]
    predictions = iter(predictor(flat) if flat else [])
    models = []
    for plan in plans:
        horizons, rmse, sd_rel = [], [], []
        for bt in plan:
            err = np.log(np.asarray(next(predictions), dtype=float)) - np.log(bt.truth)
            err = err[np.isfinite(err)]
            if err.size < 2:
                continue
            horizons.append(bt.steps)
            rmse.append(math.sqrt(float(np.mean(err**2))))
            sd_rel.append(math.sqrt(float(np.mean((err - err.mean()) ** 2))))
        models.append(ErrorModel(np.array(horizons, dtype=float), np.array(rmse),
                                 np.array(sd_rel), gamma))
    return models


def interval(predicted: np.ndarray, log_sd: float, level: float = 0.9
             ) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval for log-normal errors of scale ``log_sd`` (NaN bounds
    when the scale is unknown: too few sizes to back-test)."""
    if not math.isfinite(log_sd):  # nothing to back-test yet: no interval to state
        nan = np.full(np.shape(predicted), np.nan)
        return nan, nan.copy()
    z = float(ndtri(0.5 + level / 2))
    spread = np.exp(z * log_sd)
    return predicted / spread, predicted * spread


def probability_best(predicted: np.ndarray, log_sd: float, grid: int = 801) -> np.ndarray:
    """P(each candidate has the lowest true loss) for independent normal log errors.

    P(i best) = ∫ φ_i(x) Π_{j≠i} (1 - Φ_j(x)) dx, on a fine grid; exact ties share.
    An unknown scale (NaN: nothing to back-test yet) gives every candidate 1/n.
    """
    mu = np.log(np.asarray(predicted, dtype=float))
    n = mu.size
    if n == 1:
        return np.ones(1)
    if math.isnan(log_sd) or math.isinf(log_sd):
        return np.full(n, 1.0 / n)  # no error estimate: nothing is known about the order
    if log_sd <= 0:
        best = mu == mu.min()
        return best / best.sum()
    x = np.linspace(mu.min() - 8 * log_sd, mu.max() + 8 * log_sd, grid)
    z = (x[None, :] - mu[:, None]) / log_sd
    pdf = np.exp(-0.5 * z * z) / (log_sd * math.sqrt(2 * math.pi))
    log_surv = np.log(np.clip(1.0 - ndtr(z), 1e-300, None))
    others = log_surv.sum(0, keepdims=True) - log_surv
    integrand = pdf * np.exp(others)
    p = np.trapezoid(integrand, x, axis=1)
    return p / p.sum()
