"""The fitting engine: laws fitted to curves in log-loss space.

Recipe (deterministic, no random restarts):

1. **Variable projection on a grid.**  For every grid value of the shape parameters φ
   the law is linear in (B, E); solve the 2 x 2 weighted least-squares problem with
   weights 1/L² (so linear residuals approximate log residuals), keep B, E > 0, and
   score the grid point by its exact log-space sum of squares.  One vectorised numpy
   computation per curve.
2. **Refine the best few** distinct grid points of *every curve at once*: a batched,
   box-projected Levenberg-Marquardt on θ = (log B, log E, φ) with the analytic
   Jacobian and the robust loss as iteratively re-weighted least squares.  A single
   curve costs the same as hundreds, which is what keeps ``lensllm bench`` fast.
3. **Polish** with ``scipy.optimize.least_squares`` (trust-region reflective, exact
   bounds, the same robust loss) the best start of every curve whose LM run hit its
   iteration cap (or of every curve, with ``polish="always"``).  The batched LM is the
   fast path; tests/test_laws.py checks that it reaches the objective of the best of
   many independent per-curve ``least_squares`` runs.
4. **Diagnose.**  The result carries the Jacobian's condition number and whether the
   refined starts that reach (nearly) the best objective agree on the extrapolated
   loss -- if they do not, the data cannot tell the answers apart.

Optional Gaussian priors on θ enter as extra, non-robust residuals (a MAP fit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from lensllm.core.laws.families import Law
from lensllm.errors import FitError, InputError

LOG_B_BOUNDS = (-30.0, 80.0)
E_FLOOR = 1e-6
ROBUST_LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")
LM_ITERATIONS = 300


@dataclass(frozen=True)
class Prior:
    """Independent Gaussian priors on internal parameters: θ_j ~ N(mean_j, sd_j²).

    Keys are ``"log_b"``, ``"log_e"`` or a shape name of the law (``"beta"``, ...).
    ``noise`` is the standard deviation of the log-loss measurement noise assumed for
    the data residuals; prior residuals are scaled by it so that the objective is a
    proper MAP, Σ r²/noise² + Σ ((θ - mean)/sd)², whatever the noise level.
    """

    mean: dict[str, float] = field(default_factory=dict)
    sd: dict[str, float] = field(default_factory=dict)
    noise: float = 0.01


@dataclass(frozen=True)
class FitResult:
    """A fitted law: parameters, residuals and diagnostics."""

    law: Law
    theta: np.ndarray
    sizes: np.ndarray
    losses: np.ndarray
    weights: np.ndarray
    residuals: np.ndarray
    cost: float
    success: bool
    message: str
    condition: float
    starts_agree: bool
    n_starts: int
    jacobian: np.ndarray

    @property
    def params(self) -> dict[str, float]:
        """Parameters in the law's published form (B, β, E, D_l / F, ...)."""
        return self.law.natural_params(float(self.theta[0]), float(self.theta[1]),
                                       self.theta[2:])

    @property
    def rmse_log(self) -> float:
        return float(np.sqrt(np.mean(self.residuals**2)))

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        return self.law.predict(n, self.theta)


def theta_names(law: Law) -> tuple[str, ...]:
    return ("log_b", "log_e", *law.shape_names)


def params_at_bounds(fit: FitResult, rtol: float = 1e-4) -> tuple[str, ...]:
    """The internal parameters of ``fit`` that sit on a bound of the box the engine fits
    in (within ``rtol`` of the bound's span): a value there was stopped by the box, not
    chosen by the data.  E's upper bound is the curve's largest loss, as in the fit."""
    used = fit.weights > 0
    lo = [LOG_B_BOUNDS[0], math.log(E_FLOOR)] + [b[0] for b in fit.law.shape_bounds()]
    hi = [LOG_B_BOUNDS[1], math.log(float(fit.losses[used].max()))]
    hi += [b[1] for b in fit.law.shape_bounds()]
    names = theta_names(fit.law)
    out = []
    for name, value, low, high in zip(names, fit.theta, lo, hi, strict=True):
        tol = rtol * (high - low)
        if value <= low + tol or value >= high - tol:
            out.append(name)
    return tuple(out)


def robust_rho(z: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ρ(z), ρ'(z), ρ''(z) of scipy's robust losses, z = (r / f_scale)²."""
    if name == "linear":
        one = np.ones_like(z)
        return z, one, np.zeros_like(z)
    if name == "soft_l1":
        t = 1.0 + z
        return 2.0 * (np.sqrt(t) - 1.0), t**-0.5, -0.5 * t**-1.5
    if name == "huber":
        small = z <= 1.0
        sz = np.sqrt(np.where(small, 1.0, z))
        return (np.where(small, z, 2.0 * sz - 1.0), np.where(small, 1.0, 1.0 / sz),
                np.where(small, 0.0, -0.5 / (sz * sz * sz)))
    if name == "cauchy":
        t = 1.0 + z
        return np.log1p(z), 1.0 / t, -1.0 / (t * t)
    if name == "arctan":
        t = 1.0 + z * z
        return np.arctan(z), 1.0 / t, -2.0 * z / (t * t)
    raise InputError(f"unknown robust loss {name!r}; use one of {', '.join(ROBUST_LOSSES)}")


def project_linear(g: np.ndarray, y: np.ndarray, w: np.ndarray,
                   e_max: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best (B, E) for bases ``g`` (..., m) by weighted least squares, with B, E > 0.

    Where the unconstrained E falls outside [E_FLOOR, e_max] it is clamped and B
    re-solved; B is floored at a tiny positive value.
    """
    sw = w.sum(-1)
    sg = (w * g).sum(-1)
    sgg = (w * g * g).sum(-1)
    sy = (w * y).sum(-1)
    sgy = (w * g * y).sum(-1)
    det = sgg * sw - sg * sg
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        b = (sgy * sw - sg * sy) / det
        e = (sgg * sy - sg * sgy) / det
        e_clamped = np.clip(np.nan_to_num(e, nan=E_FLOOR), E_FLOOR, e_max)
        refit = (e_clamped != e) | ~np.isfinite(b)
        b = np.where(refit, (sgy - e_clamped * sg) / sgg, b)
    b = np.where(np.isfinite(b) & (b > 0), b, 1e-300)
    return b, e_clamped


class _Problem:
    """One law, C curves padded to m points; weight 0 marks padding."""

    def __init__(self, law: Law, sizes: Sequence[np.ndarray], losses: Sequence[np.ndarray],
                 weights: Sequence[np.ndarray | None] | None) -> None:
        self.law = law
        m = max(len(s) for s in sizes)
        c = len(sizes)
        self.n = np.ones((c, m))
        self.y = np.ones((c, m))
        self.w = np.zeros((c, m))
        for i, (s, y) in enumerate(zip(sizes, losses, strict=True)):
            s = np.asarray(s, dtype=float)
            y = np.asarray(y, dtype=float)
            if s.shape != y.shape or s.ndim != 1:
                raise InputError("sizes and losses must be 1-D arrays of equal length")
            if s.size < 2:
                raise InputError(f"fitting the {law.name} law needs at least 2 points, "
                                 f"got {s.size}")
            if not law.uses_zero_shot and np.any(s <= 0):
                raise InputError(f"the {law.name} law cannot use size-0 (zero-shot) points")
            if np.any(~np.isfinite(y)) or np.any(y <= 0):
                raise InputError("losses must be finite and > 0")
            self.n[i, : s.size] = s
            self.y[i, : s.size] = y
            wi = None if weights is None else weights[i]
            self.w[i, : s.size] = 1.0 if wi is None else np.asarray(wi, dtype=float)
        self.log_y = np.log(self.y)
        self.counts = [len(s) for s in sizes]
        k = len(law.shape_names)
        self.p = 2 + k
        lo = [LOG_B_BOUNDS[0], math.log(E_FLOOR)] + [b[0] for b in law.shape_bounds()]
        hi = [LOG_B_BOUNDS[1], 0.0] + [b[1] for b in law.shape_bounds()]
        self.lo = np.tile(np.array(lo), (c, 1))
        self.hi = np.tile(np.array(hi), (c, 1))
        # E above the largest observed loss cannot fit a decreasing curve.
        self.hi[:, 1] = np.log(np.where(self.w > 0, self.y, 0).max(axis=1))

    def predict(self, theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            g = self.law.basis(self.n[rows], theta[:, 2:])
            return np.exp(theta[:, :1]) * g + np.exp(theta[:, 1:2])

    def residuals_and_jacobian(self, theta: np.ndarray, rows: np.ndarray
                               ) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            n = self.n[rows]
            bb = np.exp(theta[:, :1])
            ee = np.exp(theta[:, 1:2])
            g = self.law.basis(n, theta[:, 2:])
            pred = bb * g + ee
            sw = np.sqrt(self.w[rows])
            r = sw * (np.log(pred) - self.log_y[rows])
            jac = np.empty((*r.shape, self.p))
            jac[..., 0] = bb * g / pred
            jac[..., 1] = ee / pred
            jac[..., 2:] = bb[..., None] * self.law.basis_grad(n, theta[:, 2:]) \
                / pred[..., None]
            jac *= sw[..., None]
        return r, jac


def _grid_starts(problem: _Problem, n_starts: int) -> tuple[np.ndarray, np.ndarray]:
    """The best distinct grid points of every curve as θ vectors.

    Returns (θ of shape (S, p), curve index of each row).  The grid is scored for all
    curves in one array operation (curves x grid x points).
    """
    law = problem.law
    grid = law.shape_grid(problem.n[problem.w > 0])
    n, y, w = problem.n[:, None, :], problem.y[:, None, :], problem.w[:, None, :]
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        g = law.basis(n, grid[None, :, :])  # (C, G, m)
        e_max = np.where(problem.w > 0, problem.y, 0).max(axis=1)[:, None]
        b, e = project_linear(g, y, w / (y * y), e_max)
        r = np.log(b[..., None] * g + e[..., None]) - problem.log_y[:, None, :]
        sse = (w * r * r).sum(-1)
    sse = np.where(np.isfinite(sse), sse, np.inf)
    span = problem.hi[0, 2:] - problem.lo[0, 2:]
    top = np.argsort(sse, axis=1, kind="stable")[:, :64]
    thetas, rows = [], []
    for i in range(len(problem.counts)):
        cand = top[i][np.isfinite(sse[i, top[i]])]
        if cand.size == 0:
            raise FitError(f"the {law.name} law has no finite fit anywhere on its grid")
        pts = grid[cand] / span
        distinct = np.abs(pts[:, None, :] - pts[None, :, :]).max(-1) > 0.08
        chosen = [0]
        for j in range(1, cand.size):
            if len(chosen) == n_starts:
                break
            if distinct[j, chosen].all():
                chosen.append(j)
        idx = cand[chosen]
        thetas.append(np.column_stack([np.log(b[i, idx]), np.log(e[i, idx]), grid[idx]]))
        rows.append(np.full(idx.size, i))
    theta = np.clip(np.vstack(thetas), problem.lo[0] + 1e-9, problem.hi[0] - 1e-9)
    rows_arr = np.concatenate(rows)
    # E's upper bound is per curve.
    theta[:, 1] = np.minimum(theta[:, 1], problem.hi[rows_arr, 1] - 1e-9)
    return theta, rows_arr


class _PriorTerms:
    """Per-row Gaussian prior residuals noise·(θ_j - μ_j)/σ_j; zero rows where none."""

    def __init__(self, law: Law, priors: Sequence[Prior | None], p: int) -> None:
        names = theta_names(law)
        c = len(priors)
        self.mean = np.zeros((c, p))
        self.inv_sd = np.zeros((c, p))
        for i, prior in enumerate(priors):
            if prior is None:
                continue
            unknown = set(prior.mean) - set(names)
            if unknown:
                raise InputError(f"prior on unknown parameter(s) {', '.join(sorted(unknown))} "
                                 f"of the {law.name} law; it has {', '.join(names)}")
            for key, mu in prior.mean.items():
                j = names.index(key)
                self.mean[i, j] = mu
                self.inv_sd[i, j] = prior.noise / prior.sd[key]
        self.active = bool(np.any(self.inv_sd > 0))


def _cost(r: np.ndarray, prior_r: np.ndarray, robust: str, f_scale: float) -> np.ndarray:
    rho = robust_rho((r / f_scale) ** 2, robust)[0]
    data = 0.5 * f_scale**2 * np.where(np.isfinite(rho), rho, np.inf).sum(-1)
    return data + 0.5 * (prior_r**2).sum(-1)


def _levenberg_marquardt(problem: _Problem, theta: np.ndarray, rows: np.ndarray,
                         priors: _PriorTerms, robust: str, f_scale: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched, box-projected LM with IRLS robust weights.

    Returns θ, cost and a converged flag per row (False: the iteration cap was hit).
    """
    lo, hi = problem.lo[rows], problem.hi[rows]
    mean, inv_sd = priors.mean[rows], priors.inv_sd[rows]
    damping = np.full(len(rows), 1e-3)
    eye = np.eye(problem.p)

    def evaluate_rows(th, subset):
        r, jac = problem.residuals_and_jacobian(th, rows[subset])
        pr = (th - mean[subset]) * inv_sd[subset]
        return r, jac, pr, _cost(r, pr, robust, f_scale)

    def evaluate(th):
        return evaluate_rows(th, np.arange(len(rows)))

    r, jac, pr, cost = evaluate(theta)
    live = np.arange(len(rows))  # rows still iterating; converged rows drop out
    for _ in range(LM_ITERATIONS):
        th, rl, jl, pl = theta[live], r[live], jac[live], pr[live]
        lo_l, hi_l, isd = lo[live], hi[live], inv_sd[live]
        rho1 = robust_rho((rl / f_scale) ** 2, robust)[1]
        jw = jl * rho1[..., None]
        hess = jw.transpose(0, 2, 1) @ jl + isd[:, :, None] ** 2 * eye
        grad = (jw.transpose(0, 2, 1) @ rl[..., None])[..., 0] + isd * pl
        # Parameters pinned at a bound by a gradient pointing outwards stay put, so the
        # step of the others is not wasted on a direction the clip would undo.
        pinned = ((th <= lo_l + 1e-10) & (grad > 0)) | ((th >= hi_l - 1e-10) & (grad < 0))
        free = ~pinned
        hess = hess * (free[:, :, None] & free[:, None, :]) + pinned[:, :, None] * eye
        grad = np.where(pinned, 0.0, grad)
        diag = np.diagonal(hess, axis1=1, axis2=2)
        a = hess + (damping[live, None] * np.maximum(diag, 1e-12))[:, :, None] * eye
        bad = ~np.isfinite(a).all(axis=(1, 2)) | ~np.isfinite(grad).all(axis=1)
        a[bad] = eye
        grad[bad] = 0.0
        step = np.linalg.solve(a, -grad[..., None])[..., 0]
        trial = np.clip(th + step, lo_l, hi_l)
        r2, jac2, pr2, cost2 = evaluate_rows(trial, live)
        better = cost2 < cost[live]
        gain = np.where(better, cost[live] - cost2, 0.0)
        acc = live[better]
        theta[acc], r[acc], jac[acc], pr[acc], cost[acc] = (
            trial[better], r2[better], jac2[better], pr2[better], cost2[better])
        damping[live] = np.where(better, np.maximum(damping[live] / 3.0, 1e-9),
                                 np.minimum(damping[live] * 4.0, 1e10))
        done = (better & (gain <= 1e-13 * (1.0 + cost[live]))) | (damping[live] > 1e8) | bad
        live = live[~done]
        if live.size == 0:
            break
    converged = np.ones(len(rows), dtype=bool)
    converged[live] = False
    return theta, cost, converged


def fit_law(law: Law, sizes: np.ndarray, losses: np.ndarray, *,
            weights: np.ndarray | None = None, prior: Prior | None = None,
            **options) -> FitResult:
    """Fit ``law`` to one curve; see :func:`fit_curves` for the options."""
    return fit_curves(law, [sizes], [losses], weights=None if weights is None else [weights],
                      priors=None if prior is None else [prior], **options)[0]


def fit_curves(
    law: Law,
    sizes: Sequence[np.ndarray],
    losses: Sequence[np.ndarray],
    *,
    weights: Sequence[np.ndarray | None] | None = None,
    priors: Sequence[Prior | None] | None = None,
    robust: str = "linear",
    f_scale: float = 0.01,
    n_starts: int = 3,
    check_at: float | Sequence[float] | None = None,
    agree_rtol: float = 0.01,
    polish: str = "auto",
) -> list[FitResult]:
    """Fit one law to many curves (least squares on log loss); one result per curve.

    ``weights`` multiply the squared log residuals of each curve.  ``priors`` give an
    optional Gaussian prior per curve.  ``check_at`` is the data size at which the
    refined starts must agree (default: 8 x the largest size of the curve).
    ``polish``: run ``least_squares`` from the best start ``"always"``, ``"never"``, or
    only where the batched LM hit its iteration cap (``"auto"``).
    """
    if polish not in ("auto", "always", "never"):
        raise InputError(f"polish must be 'auto', 'always' or 'never', got {polish!r}")
    if robust not in ROBUST_LOSSES:
        raise InputError(f"unknown robust loss {robust!r}; use one of {', '.join(ROBUST_LOSSES)}")
    if not sizes:
        return []
    problem = _Problem(law, sizes, losses, weights)
    c = len(problem.counts)
    prior_terms = _PriorTerms(law, list(priors) if priors is not None else [None] * c,
                              problem.p)
    starts, rows = _grid_starts(problem, n_starts)
    theta, cost, converged = _levenberg_marquardt(problem, starts, rows, prior_terms, robust,
                                                  f_scale)
    checks = np.broadcast_to(np.asarray(
        [8.0 * problem.n[i][problem.w[i] > 0].max() for i in range(c)]
        if check_at is None else check_at, dtype=float), (c,))

    results = []
    for i in range(c):
        mine = np.flatnonzero(rows == i)
        order = mine[np.argsort(cost[mine], kind="stable")]
        best_cost = cost[order[0]]
        if not np.isfinite(best_cost):
            raise FitError(f"the {law.name} law could not be fitted (no finite solution)")
        near = order[cost[order] <= best_cost * 1.05 + 1e-12]
        preds = np.array([float(law.predict(checks[i], theta[j])) for j in near])
        agree = bool(np.all(np.isfinite(preds))
                     and preds.max() - preds.min() <= agree_rtol * abs(preds.min()))
        do_polish = polish == "always" or (polish == "auto" and not converged[order[0]])
        results.append(_finish(problem, i, theta[order[0]], float(best_cost), prior_terms,
                               robust, f_scale, do_polish, agree, len(mine)))
    return results


def _finish(problem: _Problem, i: int, theta: np.ndarray, cost: float, priors: _PriorTerms,
            robust: str, f_scale: float, polish: bool, agree: bool,
            n_starts: int) -> FitResult:
    law = problem.law
    m = problem.counts[i]
    n, y, w = problem.n[i, :m], problem.y[i, :m], problem.w[i, :m]
    row = np.array([i])
    lo, hi = problem.lo[i], problem.hi[i]
    success, message = True, "batched Levenberg-Marquardt converged"
    if polish:
        n_prior = int(np.count_nonzero(priors.inv_sd[i]))
        active = priors.inv_sd[i] > 0

        def fun(th):
            r, _ = problem.residuals_and_jacobian(th[None], row)
            return np.concatenate([r[0, :m], ((th - priors.mean[i]) * priors.inv_sd[i])[active]])

        def jac(th):
            _, jm = problem.residuals_and_jacobian(th[None], row)
            return np.vstack([jm[0, :m], np.diag(priors.inv_sd[i])[active]])

        def loss(z):
            # The robust loss applies to data residuals only; prior terms stay quadratic.
            rho = np.array(robust_rho(z / f_scale**2, robust))
            rho[0] *= f_scale**2
            rho[2] /= f_scale**2
            if n_prior:
                rho[:, m:] = [[1.0], [1.0], [0.0]] * np.ones((1, n_prior))
                rho[0, m:] = z[m:]
            return rho

        x0 = np.clip(theta, lo + 1e-10 * (hi - lo), hi - 1e-10 * (hi - lo))
        sol = least_squares(fun, x0, jac=jac, bounds=(lo, hi), method="trf", loss=loss,
                            x_scale="jac", max_nfev=100)
        if np.isfinite(sol.cost) and sol.cost <= cost * (1 + 1e-9) + 1e-15:
            theta, cost = sol.x, float(sol.cost)
        success, message = bool(sol.success), str(sol.message)
    _, jm = problem.residuals_and_jacobian(theta[None], row)
    jacobian = jm[0, :m]
    try:
        condition = float(np.linalg.cond(jacobian))
    except np.linalg.LinAlgError:
        condition = math.inf
    resid = np.log(law.predict(n, theta)) - np.log(y)
    return FitResult(law=law, theta=theta, sizes=n, losses=y, weights=w, residuals=resid,
                     cost=cost, success=success, message=message, condition=condition,
                     starts_agree=agree, n_starts=n_starts, jacobian=jacobian)
