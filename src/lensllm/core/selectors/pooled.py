"""Pooled LensLLM-law predictor: the candidates of one task fitted together.

**Method.**  For one task under one budget, every candidate's curve is described by
two sub-models of the LensLLM law ``L(D) = B / (F + D^β) + E`` with ``E = 0``:

* **(T) transition, shared β** -- ``log L = log B_i - log(F_i + D^β)`` with the
  asymptotic slope β *shared by all candidates of the task* (the paper's
  "task-specific learning difficulty") and a knee ``F_i = D0_i^β`` per candidate.  It
  models the pre-power -> power transition: log-log slopes steepen towards β, and how
  far along a curve is follows from its recent slope and curvature, read against
  the other candidates.  β is the optimum of the profile likelihood summed over the
  candidates (continuous: coarse grid, then zooms with log D0 refined by golden
  section, so it does not depend on the grid's resolution); (log B_i, log D0_i) by
  weighted least squares in log-loss with recency weights
  ``w = exp(-(doublings before the curve's last size) / scale)``.
* **(P) power phase, per-curve slope** -- ``F_i = 0``: a pure power law per curve on
  the power phase that AtS detects (Lin et al.; k = 3, δ = 5).

They are averaged in log space with one weight per task, budget and recency scale:
the posterior probability of (T) from the pooled evidence,
``Δ = (Σ_i SSE_P,i - Σ_i SSE_T,i) / (2 σ²)``, ``weight = 1 / (1 + exp(-(Δ - prior)))``
(``evidence_prior``: prior log-odds for (P), i.e. for AtS's line), both
sub-models fitted with the same weights (two free parameters per curve each).  σ,
the noise SD of a log-loss, is estimated from the data: the pooled robust scale
(1.4826 MAD) of every point's deviation from the line through its neighbours,
standardised to unit noise and centred per size over the candidates (curvature the
whole task shares is not noise).  Concave curves favour (T); near power laws whose
slopes do not steepen favour (P).
The prediction averages the fits at several recency scales (default 0.5 ... 2
doublings) instead of tuning one.

**Robust fitting.**  The standardised neighbour deviations also flag jumps (a one-off
drop, a stuck point): a point more than ``outlier_z`` robust SDs off gets its weight
scaled by ``outlier_z / |z|`` (Huber weights) in (T) and in the evidence.  A curve
with fewer than ``min_points`` sizes (default 4) uses (P) only: with three sizes the
curvature (T) feeds on is one second difference, i.e. noise.  The zero-shot loss is
not used (on the benchmark it sits far off many curves and made every variant worse).

**Tuning rules (no peeking).**  Two settings are tuned.  ``evidence_prior`` shrinks
the mix toward (P) when the pooled evidence is weak (few curves, noisy points); rule in
``benchmarks/tune_evidence_prior.py``: over 0, 1, 2, 3, 5, 8, 12, 20, on the training
tasks' cells of every variant of the robustness protocol (lensllm.core.robustness),
keep the largest mean over variants of mean PearCorr + mean RelAcc among the values
with no training cell more than 10 RelAcc points below AtS (12 on all three tasks).
``recency``: candidates one
scale of 0.5, 0.7071, 1, 1.4142 or 2 doublings, or the equal-weight average of the
fits at all five ("avg").  Rule: on the training tasks run the benchmark protocol
(target 1,638,400; budgets 204,800 ... 3,200) and keep the candidate with the largest
mean PearCorr + mean RelAcc over the training cells (ties: avg, then the larger
scale).  Fixed by convention, not tuned: ``outlier_z = 3`` (three robust SDs), the AtS
settings of its authors, ``min_points = 4``, search ranges that do not bind on the
benchmark.  The defaults are the rule's choice on all three tasks (avg);
``benchmarks/tune_lensllm.py`` reruns the rule in-sample and leave-one-task-out and
prints the robustness checks; the README reports how the defaults compare with AtS.

**NTK prior (off by default).**  ``ntk_prior`` > 0 puts a prior on each candidate's
knee from its measured NTK term: ``log D0_i ~ N(c + s log F_i, 1 / ntk_prior)`` with c
and s >= 0 fitted per task and recency scale (why this form:
:mod:`lensllm.core.selectors.ntkprior`).  β stays the data's choice; the knees and the
line are then fitted together, and the evidence uses the data's SSE at those knees, so
the prior can only lower the weight of (T).  It applies to the curves that carry a
spectrum with a step count, when at least three usable curves do; otherwise, and at 0,
the fit is exactly the one without it.  Rule for its value, and whether it is worth
turning on at all: ``benchmarks/tune_ntk_prior.py``.

Pure numpy, no random numbers: deterministic.  All curves and recency scales of a
task are fitted in a few vectorised passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lensllm.core.curves import CurveSet
from lensllm.core.selectors.ats import line_fit, power_phase_start
from lensllm.core.selectors.base import INTERVAL_GAMMA, Selection, Selector
from lensllm.core.selectors.ntkprior import MIN_CURVES, fit_line, log_ntk_terms
from lensllm.core.selectors.settings import (
    declared_in,
    interval,
    number,
    numbers,
    setting,
    validate_dataclass,
    whole,
)
from lensllm.errors import InputError

_LN2 = math.log(2.0)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


_POSITIVE = number(above=0)


@dataclass(frozen=True)
class PooledSettings:
    """Settings of :func:`pooled_lensllm_predict`, each declared once here (rule,
    default, help); the ``lensllm`` selector takes the same settings.

    The defaults of ``recency`` and ``evidence_prior`` are what the tuning rules (module
    docstring) chose on all three benchmark tasks; the rest is fixed by convention.
    """

    #: a point k doublings before the curve's last size weighs exp(-k / scale); the
    #: prediction averages (in log space) the pooled fits at every scale given: a
    #: uniform prior over log-scale instead of a tuned value
    recency: float | tuple[float, ...] = setting(
        (0.5, 0.7071, 1.0, 1.4142, 2.0), numbers(_POSITIVE),
        "recency scales of the fit weights, in doublings (the fits are averaged)")
    outlier_z: float = setting(
        3.0, number(at_least=0),
        "points more robust SDs than this off their neighbours are down-weighted "
        "by outlier_z / |z| (0: no robust weights)")
    min_points: int = setting(
        4, whole(3), "fewest sizes a curve needs for the transition sub-model")
    ats_k: int = setting(3, whole(2), "AtS k of the power-phase sub-model")
    ats_delta: float = setting(5.0, _POSITIVE, "AtS delta of the power-phase sub-model")
    beta_bounds: tuple[float, float] = setting(
        (0.02, 1.2), interval(above=0), "search range of the shared asymptotic slope beta")
    #: D0 from 1 to e^22 ≈ 3.6e9
    log_knee_bounds: tuple[float, float] = setting(
        (0.0, 22.0), interval(), "search range of log D0 (the knee in examples; F = D0^beta)")
    beta_grid: int = setting(40, whole(5), "coarse grid size of beta before refinement")
    knee_grid: int = setting(45, whole(5), "coarse grid size of log D0 before refinement")
    evidence_prior: float = setting(
        12.0, number(at_least=0),
        "prior log-odds for the power-phase sub-model: the transition sub-model gets half "
        "the weight only when its pooled log-evidence exceeds this")
    #: 0 (the default) leaves the fit exactly as without NTK data; see ntkprior.py
    ntk_prior: float = setting(
        0.0, number(at_least=0),
        "precision (1/SD^2, in ln examples^-2) of the prior putting each candidate's log "
        "knee on a line in its measured log F(theta,t), offset and slope >= 0 fitted per "
        "task (0: off; curves without an NTK spectrum get no prior)")

    def __post_init__(self) -> None:
        validate_dataclass(self, "pooled")


@dataclass(frozen=True, eq=False)
class PooledPrediction:
    """The pooled fit of one task under one budget, and its predictions.

    With R recency scales (index r) and n models (index i)::

        T_ri(D) = log_b[r, i] - log(exp(beta[r] * log_knee[r, i]) + D**beta[r])
        P_i(D)  = power_intercept[i] + power_slope[i] * log D
        log L_i(D) = mean_r( weight[r, i] * T_ri(D) + (1 - weight[r, i]) * P_i(D) )
    """

    task: str
    budget: int
    target: int
    models: list[str]
    #: predicted loss of each model at ``target`` (n,)
    predicted: np.ndarray
    #: the recency scales averaged over (R,)
    recency: np.ndarray
    #: shared asymptotic slope β of the transition sub-model, per scale (R,)
    beta: np.ndarray
    #: log B and log D0 (knee in examples; F = D0^β) of the transition sub-model (R, n)
    log_b: np.ndarray
    log_knee: np.ndarray
    #: the power-phase line of each model in log-log (n,); slope < 0 for a falling loss
    power_slope: np.ndarray
    power_intercept: np.ndarray
    #: weight of the transition sub-model (R, n): the pooled posterior per scale, 0 for
    #: a curve with fewer than ``min_points`` sizes
    weight: np.ndarray
    #: pooled log-evidence Δ for the transition sub-model per scale (R,), and the
    #: noise SD of the log-losses it was computed with
    evidence: np.ndarray
    noise_sd: float
    #: per model: the robust weight of each measured size (1 = not an outlier)
    robust_weights: list[np.ndarray] = field(repr=False)
    #: the NTK prior's line per scale (R, 2): offset c and slope s of log D0 on log F;
    #: None where the prior was off or not applicable (fewer than 3 curves with F)
    ntk_line: np.ndarray | None = None

    def log_components(self, sizes: float | Sequence[float] | np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """log L of the two sub-models: transition (R, n, S) and power phase (n, S)."""
        s = np.atleast_1d(np.asarray(sizes, dtype=float))
        if np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise InputError("pooled: sizes to predict at must be finite and > 0")
        x = np.log(s)[None, None, :]
        b = self.beta[:, None, None]
        log_t = self.log_b[..., None] - np.logaddexp(b * self.log_knee[..., None], b * x)
        log_p = self.power_intercept[:, None] + self.power_slope[:, None] * x[0]
        return log_t, log_p

    def predict(self, sizes: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """Predicted losses, shape (n, len(sizes)); a scalar size gives shape (n,)."""
        log_t, log_p = self.log_components(sizes)
        w = self.weight[..., None]
        out = np.exp((w * log_t + (1.0 - w) * log_p[None]).mean(0))
        return out[:, 0] if np.ndim(sizes) == 0 else out


# ----------------------------------------------------------------------------------
# data layout


@dataclass(frozen=True)
class _Task:
    """One task's curves on the union of their sizes (NaN where a curve lacks one)."""

    x: np.ndarray          # (M,) log sizes, increasing
    y: np.ndarray          # (n, M) log losses, NaN where missing
    present: np.ndarray    # (n, M) bool
    counts: np.ndarray     # (n,) points per curve
    x_last: np.ndarray     # (n,) log of each curve's largest size


def _stack(curves: CurveSet) -> _Task:
    xs, ys = [], []
    for curve in curves:
        sizes = np.asarray(curve.sizes, dtype=float)
        losses = np.asarray(curve.losses, dtype=float)
        keep = (sizes > 0) & np.isfinite(losses) & (losses > 0)
        if keep.sum() < 2:
            raise InputError(
                f"{curves.task}: model {curve.model!r} has {int(keep.sum())} usable size(s) "
                "under the budget; the pooled predictor needs at least 2")
        xs.append(np.log(sizes[keep]))
        ys.append(np.log(losses[keep]))
    grid = np.unique(np.concatenate(xs))
    n, m = len(xs), grid.size
    y = np.full((n, m), np.nan)
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        y[i, np.searchsorted(grid, xi)] = yi
    present = np.isfinite(y)
    return _Task(x=grid, y=y, present=present, counts=present.sum(1),
                 x_last=np.array([xi[-1] for xi in xs]))


# ----------------------------------------------------------------------------------
# robust point weights and the noise scale


def _neighbour_deviations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each point's deviation from the line through its two neighbours (the two
    nearest on one side at the ends), divided by its SD under unit iid noise."""
    m = x.size
    u = np.zeros(m)
    if m < 3:
        return u
    for k in range(m):
        if k == 0:
            i, j = 2, 1
        elif k == m - 1:
            i, j = m - 3, m - 2
        else:
            i, j = k - 1, k + 1
        t = (x[k] - x[i]) / (x[j] - x[i])
        e = y[k] - ((1.0 - t) * y[i] + t * y[j])
        u[k] = e / math.sqrt(1.0 + (1.0 - t) ** 2 + t * t)
    return u


def _robust_weights(task: _Task, z_max: float) -> tuple[np.ndarray, float]:
    """Huber weights per point (n, M; 0 where missing) and the pooled noise SD."""
    n, m = task.y.shape
    dev = np.full((n, m), np.nan)
    for i in range(n):
        cols = np.flatnonzero(task.present[i])
        if cols.size >= 3:
            dev[i, cols] = _neighbour_deviations(task.x[cols], task.y[i, cols])
    # Curvature shared by the task (all FLAN curves are concave) is not noise: centre
    # each size on the median over the curves that have it.
    counts = np.isfinite(dev).sum(0)
    centre = np.zeros(m)
    for k in np.flatnonzero(counts >= 3):
        centre[k] = np.median(dev[np.isfinite(dev[:, k]), k])
    dev = dev - centre
    finite = dev[np.isfinite(dev)]
    sd = 1.4826 * float(np.median(np.abs(finite))) if finite.size else 0.0
    # Floor: noiseless curves must not turn every rounding difference into an outlier.
    sd = max(sd, 1e-6)
    weights = np.where(task.present, 1.0, 0.0)
    if z_max > 0:
        z = np.abs(np.nan_to_num(dev, nan=0.0)) / sd
        weights = weights * np.minimum(1.0, z_max / np.maximum(z, 1e-300))
    return weights, sd


# ----------------------------------------------------------------------------------
# the transition sub-model: shared β, per-curve (log B, log D0)


def _basis(beta: np.ndarray | float, x0: np.ndarray, x: np.ndarray) -> np.ndarray:
    """g = -log(exp(β x0) + exp(β x)), broadcasting β, x0 and x."""
    return -np.logaddexp(beta * x0, beta * x)


class _TransitionFit:
    """Weighted least squares of ``log L = a - log(D0^β + D^β)`` for every curve of a
    task under G weightings (one per recency scale) at once; a is solved in closed
    form.  β is shared by the curves of a weighting, so the basis on the knee grid is
    computed once per weighting, not per curve."""

    def __init__(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        self.x = x                                   # (M,)
        self.y = np.nan_to_num(y, nan=0.0)           # (n, M)
        self.w = w                                   # (G, n, M), 0 where missing
        self.wy = w * self.y
        self.sw = w.sum(2)
        self.sy = self.wy.sum(2)
        self.syy = (self.wy * self.y).sum(2)

    def _finish(self, sg: np.ndarray, sgg: np.ndarray, syg: np.ndarray, lead: tuple
                ) -> tuple[np.ndarray, np.ndarray]:
        sw = self.sw[lead]
        a = (self.sy[lead] - sg) / sw
        # Clip round-off: the SSE of a least-squares fit is never negative.
        return np.maximum(self.syy[lead] - 2.0 * syg + sgg - sw * a * a, 0.0), a

    def grid_sse(self, g: np.ndarray) -> np.ndarray:
        """SSE (G, n, B, K) for shared bases g (G or 1, B, K, M)."""
        g = np.broadcast_to(g, (self.w.shape[0], *g.shape[1:]))
        sg = np.einsum("gnm,gbkm->gnbk", self.w, g)
        sgg = np.einsum("gnm,gbkm->gnbk", self.w, g * g)
        syg = np.einsum("gnm,gbkm->gnbk", self.wy, g)
        return self._finish(sg, sgg, syg, (slice(None), slice(None), None, None))[0]

    def curve_sse(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SSE and a (G, n, B) for per-curve bases g (G, n, B, M)."""
        w, wy = self.w[:, :, None, :], self.wy[:, :, None, :]
        return self._finish((w * g).sum(-1), (w * g * g).sum(-1), (wy * g).sum(-1),
                            (slice(None), slice(None), None))

    def best_knees(self, betas: np.ndarray, knees: np.ndarray, iters: int = 16,
                   prior: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For β values ``betas`` (G, B): every curve's log D0 minimising its SSE (the
        best knee-grid point, then golden section within one grid step of it), with its
        SSE and a, each (G, n, B).

        ``prior`` (centre, weight), each (G, n): minimise ``SSE + weight (log D0 -
        centre)^2`` instead (the NTK prior); the SSE returned is the data's alone.
        """
        g = _basis(betas[:, :, None, None], knees[None, None, :, None],
                   self.x[None, None, None, :])                      # (G, B, K, M)
        sse = self.grid_sse(g)                                       # (G, n, B, K)
        if prior is not None:
            centre, strength = prior[0][:, :, None], prior[1][:, :, None]
            sse = sse + strength[..., None] * (knees - centre[..., None]) ** 2
        j = np.argmin(sse, 3)
        centre = knees[j]
        s_ref = np.take_along_axis(sse, j[..., None], 3)[..., 0]
        bb = betas[:, None, :, None]
        xm = self.x[None, None, None, :]

        def at(x0: np.ndarray) -> np.ndarray:
            data = self.curve_sse(_basis(bb, x0[..., None], xm))[0]
            return data if prior is None else data + strength * (x0 - centre) ** 2

        step = knees[1] - knees[0]
        lo = np.maximum(centre - step, knees[0])
        hi = np.minimum(centre + step, knees[-1])
        c = hi - _GOLDEN * (hi - lo)
        d = lo + _GOLDEN * (hi - lo)
        fc, fd = at(c), at(d)
        for _ in range(iters):
            left = fc < fd
            hi = np.where(left, d, hi)
            lo = np.where(left, lo, c)
            d_new = np.where(left, c, lo + _GOLDEN * (hi - lo))
            c_new = np.where(left, hi - _GOLDEN * (hi - lo), d)
            f_known = np.where(left, fc, fd)
            f_new = at(np.where(left, c_new, d_new))
            fc = np.where(left, f_new, f_known)
            fd = np.where(left, f_known, f_new)
            c, d = c_new, d_new
        x0 = 0.5 * (lo + hi)
        # Keep the grid point where the search did not improve on it (a flat SSE).
        x0 = np.where(at(x0) <= s_ref, x0, centre)
        s, a = self.curve_sse(_basis(bb, x0[..., None], xm))
        return x0, s, a


def _vertex(xs: np.ndarray, fs: np.ndarray) -> np.ndarray:
    """Per row: minimiser of the parabola through the best point and its two
    neighbours (the best point itself at an end or where the parabola is not convex)."""
    r = np.arange(xs.shape[0])
    best = np.argmin(fs, 1)
    i = np.clip(best, 1, xs.shape[1] - 2)
    x1, x2, x3 = xs[r, i - 1], xs[r, i], xs[r, i + 1]
    f1, f2, f3 = fs[r, i - 1], fs[r, i], fs[r, i + 1]
    den = (x2 - x1) * (f2 - f3) - (x2 - x3) * (f2 - f1)
    num = (x2 - x1) ** 2 * (f2 - f3) - (x2 - x3) ** 2 * (f2 - f1)
    ok = den > 0
    v = np.where(ok, x2 - 0.5 * num / np.where(ok, den, 1.0), x2)
    at_end = (best == 0) | (best == xs.shape[1] - 1)
    return np.where(at_end, xs[r, best], np.clip(v, x1, x3))


def _fit_transition(x: np.ndarray, y: np.ndarray, w: np.ndarray, settings: PooledSettings,
                    candidates: int = 2, zooms: int = 3
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared β per weighting (G,) and per curve (log D0, SSE, a), each (G, n).

    The coarse (β, D0) grid's ``candidates`` best local minima of the β profile are
    each zoomed into ``zooms`` times (5 points around the current optimum, then the
    vertex of the parabola through the best point and its neighbours), with log D0
    continuous; the lowest wins.  So β depends neither on the grid's resolution nor
    on which of two near-equal basins the coarse grid happens to rank first.
    """
    betas = np.linspace(*settings.beta_bounds, settings.beta_grid)
    knees = np.linspace(*settings.log_knee_bounds, settings.knee_grid)
    fit = _TransitionFit(x, y, w)
    groups = w.shape[0]
    g = _basis(betas[None, :, None, None], knees[None, None, :, None],
               x[None, None, None, :])
    profile = fit.grid_sse(g).min(3).sum(1)                           # (G, B)
    padded = np.pad(profile, ((0, 0), (1, 1)), constant_values=np.inf)
    is_min = (profile <= padded[:, :-2]) & (profile <= padded[:, 2:])
    ranked = np.argsort(np.where(is_min, profile, np.inf), axis=1, kind="stable")
    b = ranked[:, :candidates]                                        # (G, C)
    step = betas[1] - betas[0]
    lo = np.maximum(betas[b] - step, settings.beta_bounds[0])
    hi = np.minimum(betas[b] + step, settings.beta_bounds[1])
    c = b.shape[1]
    for _ in range(zooms):
        local = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, 5)   # (G, C, 5)
        total = fit.best_knees(local.reshape(groups, -1), knees)[1].sum(1)      # (G, C*5)
        beta = _vertex(local.reshape(-1, 5), total.reshape(-1, 5)).reshape(groups, c)
        step = local[..., 1] - local[..., 0]
        lo = np.maximum(beta - step, settings.beta_bounds[0])
        hi = np.minimum(beta + step, settings.beta_bounds[1])
    x0, sse, a = fit.best_knees(beta, knees)                          # (G, n, C)
    pick = np.argmin(sse.sum(1), 1)                                   # (G,)
    take = pick[:, None, None]
    return (beta[np.arange(groups), pick], np.take_along_axis(x0, take, 2)[..., 0],
            np.take_along_axis(sse, take, 2)[..., 0], np.take_along_axis(a, take, 2)[..., 0])


def _ntk_knees(task: _Task, w: np.ndarray, beta: np.ndarray, log_f: np.ndarray,
               has: np.ndarray, strength: float, settings: PooledSettings
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The knees under the NTK prior (lensllm.core.selectors.ntkprior) at the shared β
    the data chose: the line (c, s >= 0) minimising ``Σ_i SSE_i + strength Σ_{i in
    has} (log D0_i - c - s log F_i)^2`` with the knees profiled out on a fine grid,
    then each knee at its line (grid + golden section, as without the prior).
    ``strength`` is the prior's precision times σ² (the SSE is in log-loss², the
    evidence divides it by 2σ²).  Returns log D0, the data SSE and a, each (G, n), and
    the line (G, 2)."""
    lo, hi = settings.log_knee_bounds
    fine = np.linspace(lo, hi, 4 * (settings.knee_grid - 1) + 1)
    fit = _TransitionFit(task.x, task.y, w)
    g = _basis(beta[:, None, None, None], fine[None, None, :, None],
               task.x[None, None, None, :])                          # (G, 1, K, M)
    sse = fit.grid_sse(g)[:, :, 0, :]                                 # (G, n, K)
    centre_has, line = fit_line(sse[:, has], fine, log_f[has], strength)
    centre = np.zeros(w.shape[:2])
    centre[:, has] = centre_has
    weight = np.broadcast_to(np.where(has, strength, 0.0), centre.shape)
    knees = np.linspace(lo, hi, settings.knee_grid)
    x0, sse_t, a = (v[..., 0] for v in fit.best_knees(beta[:, None], knees,
                                                      prior=(centre, weight)))
    return x0, sse_t, a, line


# ----------------------------------------------------------------------------------
# the power-phase sub-model


def _weighted_line_sse(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per curve: SSE of the weighted least-squares line (the evidence of (P))."""
    yy = np.nan_to_num(y, nan=0.0)
    sw = w.sum(1)
    xm = (w * x).sum(1) / sw
    ym = (w * yy).sum(1) / sw
    dx = x[None, :] - xm[:, None]
    sxx = (w * dx * dx).sum(1)
    slope = np.where(sxx > 0, (w * dx * (yy - ym[:, None])).sum(1) / np.where(sxx > 0, sxx, 1),
                     0.0)
    r = yy - ym[:, None] - slope[:, None] * dx
    return (w * r * r).sum(1)


def _power_phase(curves: CurveSet, k: int, delta: float) -> tuple[np.ndarray, np.ndarray]:
    slopes, intercepts = [], []
    for curve in curves:
        keep = (curve.sizes > 0) & np.isfinite(curve.losses) & (curve.losses > 0)
        x = np.log(curve.sizes[keep].astype(float))
        y = np.log(curve.losses[keep])
        start = power_phase_start(x, y, k, delta)
        slope, intercept = line_fit(x[start:], y[start:])
        slopes.append(slope)
        intercepts.append(intercept)
    return np.array(slopes), np.array(intercepts)


# ----------------------------------------------------------------------------------
# the predictor


def _predict_one(curves: CurveSet, budget: int, target: int,
                 settings: PooledSettings) -> PooledPrediction:
    task = _stack(curves)
    n = len(curves)
    robust, noise_sd = _robust_weights(task, settings.outlier_z)
    scales = np.asarray(settings.recency, dtype=float)                  # (R,)
    back = (task.x_last[:, None] - task.x[None, :]) / _LN2           # doublings before last
    decay = np.exp(-np.maximum(back, 0.0)[None] / scales[:, None, None])   # (R, n, M)
    w = np.where(task.present[None], decay * robust[None], 0.0)       # (R, n, M)

    r = scales.size
    beta, x0, sse_t, a = _fit_transition(task.x, task.y, w, settings)   # (R,), (R, n)
    sse_p = np.stack([_weighted_line_sse(task.x, task.y, wr) for wr in w])   # (R, n)
    slope, intercept = _power_phase(curves, settings.ats_k, settings.ats_delta)

    usable = task.counts >= settings.min_points
    line = None
    if settings.ntk_prior > 0:
        log_f = log_ntk_terms(curves)
        has = usable & np.isfinite(log_f)
        if has.sum() >= MIN_CURVES:
            x0, sse_t, a, line = _ntk_knees(task, w, beta, log_f, has,
                                            settings.ntk_prior * noise_sd**2, settings)
    if usable.any():
        evidence = (sse_p[:, usable].sum(1) - sse_t[:, usable].sum(1)) / (2.0 * noise_sd**2)
    else:
        evidence = np.full(r, -np.inf)
    # The prior shrinks the mix toward (P), AtS's line, when the evidence is weak.
    pooled = 1.0 / (1.0 + np.exp(-np.clip(evidence - settings.evidence_prior,
                                          -700.0, 700.0)))            # (R,)
    weight = np.where(usable[None, :], pooled[:, None], 0.0)           # (R, n)

    result = PooledPrediction(
        task=curves.task, budget=int(budget), target=int(target), models=curves.models,
        predicted=np.empty(0), recency=scales, beta=beta, log_b=a,
        log_knee=x0, power_slope=slope, power_intercept=intercept,
        weight=weight, evidence=evidence, noise_sd=float(noise_sd),
        robust_weights=[robust[i, task.present[i]] for i in range(n)], ntk_line=line)
    object.__setattr__(result, "predicted", result.predict(float(target)))
    return result


def pooled_lensllm_predict(requests: Sequence[tuple[CurveSet, int, int]],
                           settings: PooledSettings | None = None) -> list[PooledPrediction]:
    """Pooled LensLLM-law predictions for many (curves, budget, target) requests.

    Each request's curves are restricted to ``budget`` here (``curves.within``; a
    no-op when the caller already did it).  Curves may have any sizes (not only
    doublings), missing sizes and different lengths (>= 2 sizes each); the zero-shot
    loss is not used.  See the module docstring for the method and the tuning rule.
    """
    settings = settings or PooledSettings()
    out = []
    for curves, budget, target in requests:
        if budget <= 0 or target <= 0:
            raise InputError("pooled: budget and target must be > 0")
        out.append(_predict_one(curves.within(budget), int(budget), int(target), settings))
    return out


__all__ = ["PooledLensLLM", "PooledPrediction", "PooledSettings", "pooled_lensllm_predict"]


class PooledLensLLM(Selector):
    """``lensllm``: the pooled LensLLM-law predictor (see the module docstring)."""

    name = "lensllm"
    score_label = "predicted loss"
    #: fewest sizes to select at all (the setting ``min_points`` is the fewest for the
    #: transition sub-model)
    required_sizes = 3
    max_candidates = 2000
    settings = (*declared_in(PooledSettings), INTERVAL_GAMMA)

    @property
    def pooled(self) -> PooledSettings:
        """The settings of the numerical predictor."""
        params = self.get_params()
        return PooledSettings(**{s.name: params[s.name] for s in declared_in(PooledSettings)})

    def _select_many(self, requests: list[tuple[CurveSet, int, int]]) -> list[Selection]:
        out = []
        for (curves, budget, target), fit in zip(
                requests, pooled_lensllm_predict(requests, self.pooled), strict=True):
            out.append(self._selection(
                curves, budget, target, fit.predicted, predicted=fit.predicted,
                details={"pooled": fit,
                         "predict": lambda i, n, fit=fit: fit.predict(
                             np.atleast_1d(np.asarray(n, dtype=float)))[i]}))
        return out

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        return self._select_many([(curves, budget, target)])[0]
