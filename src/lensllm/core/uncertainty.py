"""Uncertainty of predicted losses: split-conformal intervals over back-tests, and P(best).

The error that matters is the predictor being wrong about the unmeasured part of the
curve, so it is measured by back-testing the *same predictor* on the curves at hand:
with the budget cut by 1, 2, ... doublings it predicts the loss at the largest size
the candidates share.  Each back-test error ``e`` (log space) at horizon ``h``
doublings becomes a conformity score ``|e| / h**gamma``; the interval at the real
horizon ``H = log2(target / budget)`` is

    pred * exp(± q * H**gamma),  q = the ceil((n + 1) * level)-th smallest of n scores

(split-conformal; when that rank exceeds n the largest score is used rather than an
infinite interval).  ``gamma`` (how fast errors grow with the horizon) is the one
tuned setting, chosen by the rule in :mod:`lensllm.core.tuning` (tables:
``benchmarks/tune_intervals.py``, which also scores other calibrations of the same
back-tests; none met the coverage goals held out, so this one stays).

P(best) needs only errors *relative to the other candidates* (a shift shared by all
does not change the order): scores of ``e - median(e)`` give ``q_rel``, and P(best) is
computed for independent normal log errors with the same ``level`` quantile,
``sd = q_rel * H**gamma / z``.  With ``alive`` given, only those candidates are
back-tested and scored (the pseudo target is the largest size they all have), so the
error model of an adaptive search rests on the survivors' own back-tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from lensllm.core.curves import CurveSet

#: a predictor: many (curves, budget, target) -> predicted losses, one array each
Predictor = Callable[[list[tuple[CurveSet, int, int]]], list[np.ndarray]]

#: chosen by the rule in lensllm.core.tuning.choose_gamma (smallest gamma whose 90 %
#: intervals cover >= 75 % in every training cell)
DEFAULT_GAMMA = 1.65
#: longest back-test horizon, in doublings
MAX_STEPS = 4
#: the quantile level of the relative errors that sets P(best)'s normal scale (fixed,
#: so P(best) does not change with the level asked of the intervals)
PBEST_LEVEL = 0.9


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile of ``scores`` (NaN without scores)."""
    s = np.sort(np.asarray(scores, dtype=float))
    if s.size == 0:
        return math.nan
    k = min(math.ceil((s.size + 1) * level), s.size)
    return float(s[k - 1])


@dataclass(frozen=True)
class ConformalErrorModel:
    """Conformity scores of one (task, budget); scales for any horizon and level."""

    scores: np.ndarray       # |e| / h**gamma, every back-tested candidate and horizon
    rel_scores: np.ndarray   # |e - median_h(e)| / h**gamma
    horizons: np.ndarray     # the back-test horizons used (doublings)
    gamma: float

    def half_width(self, horizon: float, level: float = 0.9) -> float:
        """Log-space half-width of the ``level`` interval ``horizon`` doublings out."""
        return conformal_quantile(self.scores, level) * horizon**self.gamma

    def sd_rel_at(self, horizon: float, level: float = 0.9) -> float:
        """Normal scale of the relative log errors that matches their ``level`` quantile."""
        z = float(ndtri(0.5 + level / 2))
        return conformal_quantile(self.rel_scores, level) * horizon**self.gamma / z

    def rmse_at(self, horizon: float, level: float = 0.9) -> float:
        """The normal scale whose ``level`` interval is this one (for callers that
        still think in standard deviations)."""
        return self.half_width(horizon, level) / float(ndtri(0.5 + level / 2))


@dataclass(frozen=True)
class _Plan:
    requests: list[tuple[CurveSet, int, int]]
    steps: list[int]
    truth: np.ndarray
    index: np.ndarray  # positions of the scored candidates in the curve set


def _plan(curves: CurveSet, budget: int, min_points: int, max_steps: int,
          alive: Sequence[str] | None) -> _Plan:
    seen = curves.within(budget)
    names = list(alive) if alive is not None else seen.models
    index = np.array([seen.models.index(m) for m in names], dtype=int)
    common = set(seen[int(index[0])].sizes.tolist()) if index.size else set()
    for i in index:
        common &= set(seen[int(i)].sizes.tolist())
    if len(index) < 2 or not common:
        return _Plan([], [], np.empty(0), index)
    pseudo_target = int(max(common))
    truth = np.array([seen[int(i)].loss_at(pseudo_target) for i in index])
    requests, steps = [], []
    for step in range(1, max_steps + 1):
        pseudo_budget = pseudo_target // 2**step
        cut = seen.within(pseudo_budget)
        if min(len(cut[int(i)]) for i in index) < max(min_points, 2):
            break
        # Curves with fewer points (dropped candidates) are left out of the cut fit
        # only if they could not be fitted at all.
        keep = [c.model for c in cut if len(c) >= max(min_points, 2)]
        if len(keep) < len(cut):
            cut = cut.subset(keep)
        requests.append((cut, pseudo_budget, pseudo_target))
        steps.append(step)
    return _Plan(requests, steps, truth, index)


def conformal_models(predictor: Predictor, requests: Sequence[tuple[CurveSet, int, int]],
                     min_points: int, gamma: float = DEFAULT_GAMMA,
                     max_steps: int = MAX_STEPS,
                     alive: Sequence[Sequence[str] | None] | None = None
                     ) -> list[ConformalErrorModel]:
    """Back-test ``predictor`` for every request (one batched predictor call)."""
    alive = list(alive) if alive is not None else [None] * len(requests)
    plans = [_plan(c, b, min_points, max_steps, a)
             for (c, b, _), a in zip(requests, alive, strict=True)]
    flat = [r for p in plans for r in p.requests]
    predictions = iter(predictor(flat) if flat else [])
    out = []
    for plan, (curves, budget, _) in zip(plans, requests, strict=True):
        names = [curves.within(budget).models[int(i)] for i in plan.index]
        scores, rel, hs = [], [], []
        for (cut, _, _), step in zip(plan.requests, plan.steps, strict=True):
            pred = np.asarray(next(predictions), dtype=float)
            pos = [cut.models.index(m) for m in names]
            err = np.log(pred[pos]) - np.log(plan.truth)
            err = err[np.isfinite(err)]
            if err.size < 2:
                continue
            scale = float(step) ** gamma
            scores.append(np.abs(err) / scale)
            rel.append(np.abs(err - np.median(err)) / scale)
            hs.append(step)
        cat = (lambda xs: np.concatenate(xs) if xs else np.empty(0))  # noqa: E731
        out.append(ConformalErrorModel(cat(scores), cat(rel), np.array(hs, dtype=float),
                                       float(gamma)))
    return out


def conformal_interval(predicted: np.ndarray, model: ConformalErrorModel, horizon: float,
                       level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` interval of every prediction (NaN bounds without back-tests)."""
    half = model.half_width(horizon, level)
    if not math.isfinite(half):
        nan = np.full(np.shape(predicted), np.nan)
        return nan, nan.copy()
    spread = math.exp(half)
    return predicted / spread, predicted * spread


#: candidates per block of the P(best) integral (a block holds block x grid values)
_PBEST_CHUNK = 2048


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

    def log_survival(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (x[None, :] - rows[:, None]) / log_sd
        return z, np.log(np.clip(1.0 - ndtr(z), 1e-300, None))

    # In blocks of candidates, so that memory grows with n, not with n x grid at once.
    chunks = [mu[i:i + _PBEST_CHUNK] for i in range(0, n, _PBEST_CHUNK)]
    total = sum(log_survival(rows)[1].sum(0) for rows in chunks)
    parts = []
    for rows in chunks:
        z, log_surv = log_survival(rows)
        pdf = np.exp(-0.5 * z * z) / (log_sd * math.sqrt(2 * math.pi))
        parts.append(np.trapezoid(pdf * np.exp(total[None, :] - log_surv), x, axis=1))
    p = np.concatenate(parts)
    return p / p.sum()
