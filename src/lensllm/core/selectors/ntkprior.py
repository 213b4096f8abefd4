"""The measured NTK term as a prior on the pooled fit's knees (``lensllm[ntk_prior=S]``).

The LensLLM law ``L = B / (F(Θ,t) + D^β)`` puts a curve's knee (the pre-power ->
power transition, ``D0`` with ``F = D0^β``) at ``log D0 = log F / β``.  The measured F
is not in the unit of ``D^β``: its size depends on the probe set, the loss and the
parameters probed, so it cannot be compared across tasks, and the paper's fit of it
as is (``lensllm-paper``) has to absorb the mismatch in B.  What the law still claims
within a task is an ordering with a linear trend: candidates with a larger measured F
bend later.  The prior therefore says

    log D0_i ~ N(c + s * log F_i, 1 / S),   s >= 0,

with the offset c and the slope s shared by the candidates of one task (and one
recency weighting) and fitted jointly with the knees, and S (``ntk_prior``) the
precision in (ln examples)^-2: the prior SD of a knee around the line is 1 / sqrt(S)
natural-log units.  A fitted offset removes F's unit; a fitted slope removes its
dispersion (F may spread over more or fewer decades than the knees), so only the
*order and relative spacing* of the measured F inform the fit; the law's own slope
1 / β is one value s may take.  s is kept >= 0, the law's sign: a negative fitted
trend is not what the paper claims, and the prior then only shrinks the knees toward
their common mean.  Ranks instead of log F were considered and not chosen: with eight
or so candidates they throw away the spacing the law is about, and the fitted slope
already makes the prior insensitive to F's scale.

This module extracts log F from the curves and fits the line with every knee profiled
out; the final penalised knee search lives in :mod:`lensllm.core.selectors.pooled`.
"""

from __future__ import annotations

import math

import numpy as np

from lensllm.core.curves import CurveSet
from lensllm.core.laws.families import ntk_term

#: fewest candidates with a measured F a task needs for the prior: a fitted line
#: through two points fits them exactly and would carry no information
MIN_CURVES = 3


def log_ntk_terms(curves: CurveSet) -> np.ndarray:
    """log F(Θ, t) of every curve at its measured step count t, shape (n,).

    NaN where a curve has no NTK spectrum, no recorded step count (F would need a
    fitted t, which the pooled fit does not have) or F <= 0 (no log): such a curve
    gets no prior on its knee.
    """
    out = np.full(len(curves), np.nan)
    for i, curve in enumerate(curves):
        ntk = curve.ntk
        if ntk is None or ntk.steps is None:
            continue
        f = float(ntk_term(ntk.eigenvalues, ntk.projections, ntk.learning_rate, ntk.steps))
        if f > 0 and math.isfinite(f):
            out[i] = math.log(f)
    return out


def _profile(env: np.ndarray, u0: float, du: float, z: np.ndarray, c: np.ndarray,
             s: np.ndarray) -> np.ndarray:
    """Σ_i env_i(c + s z_i) for lines (c, s), each (G, P); env (G, n, U) on the uniform
    grid u0 + du k, linear in between (clamped at its ends)."""
    mu = c[:, None, :] + s[:, None, :] * z[None, :, None]                 # (G, n, P)
    pos = np.clip((mu - u0) / du, 0.0, env.shape[2] - 1.0)
    k = np.minimum(pos.astype(int), env.shape[2] - 2)
    frac = pos - k
    e0 = np.take_along_axis(env, k, 2)
    e1 = np.take_along_axis(env, k + 1, 2)
    return (e0 + frac * (e1 - e0)).sum(1)


def fit_line(sse: np.ndarray, grid: np.ndarray, log_f: np.ndarray, strength: float,
             zooms: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The prior's line, fitted jointly with the knees, and each curve's prior centre.

    ``sse`` (G, n, K): each curve's data SSE on the uniform knee grid ``grid`` (K,), for
    the n curves with a prior; ``log_f`` (n,); ``strength`` the prior's weight in SSE
    units.  Minimises over (c, s >= 0) the sum over curves of
    ``min_x SSE_i(x) + strength (x - c - s log F_i)^2``: each curve's knee profiled
    out exactly on the grid, so strongly coupled knees and line are solved together
    (alternating the two would stall as the prior gets strong).  A coarse grid of
    lines, then ``zooms`` halvings around the best.  Returns the centres c + s log F_i
    (G, n) and the line (G, 2) as (c, s) in log F's own units.
    """
    du = float(grid[1] - grid[0])
    span = float(grid[-1] - grid[0])
    # Centres may leave the knee range (a steep line): tabulate the envelope beyond it.
    u = np.arange(grid[0] - span, grid[-1] + span + du / 2, du)
    env = np.stack([(sse[:, i, None, :] + strength * (grid[None, :] - u[:, None]) ** 2
                     ).min(-1) for i in range(sse.shape[1])], 1)         # (G, n, U)
    # Standardised log F: the slope's search range then does not depend on F's unit.
    mean, sd = float(log_f.mean()), float(log_f.std())
    sd = sd if sd > 0 else 1.0
    z = (log_f - mean) / sd
    width = float(z.max() - z.min()) or 1.0
    groups = sse.shape[0]
    slopes = np.linspace(0.0, span / width, 21)
    offsets = np.linspace(grid[0], grid[-1], 45)
    # s-major order: among equal values the smallest slope wins (argmin takes the first)
    ss, cc = (np.broadcast_to(v.ravel(), (groups, v.size))
              for v in np.meshgrid(slopes, offsets, indexing="ij"))
    value = _profile(env, float(u[0]), du, z, cc, ss)
    best = np.argmin(value, 1)
    c, s = cc[np.arange(groups), best], ss[np.arange(groups), best]
    dc, ds = offsets[1] - offsets[0], slopes[1] - slopes[0]
    steps = np.linspace(-2.0, 2.0, 5)
    for _ in range(zooms):
        cc = (c[:, None, None] + dc * steps[None, None, :]).repeat(5, 1).reshape(groups, -1)
        ss = np.maximum(s[:, None, None] + ds * steps[None, :, None], 0.0
                        ).repeat(5, 2).reshape(groups, -1)
        value = _profile(env, float(u[0]), du, z, cc, ss)
        best = np.argmin(value, 1)
        c, s = cc[np.arange(groups), best], ss[np.arange(groups), best]
        dc, ds = dc / 2, ds / 2
    centre = c[:, None] + s[:, None] * z[None, :]
    return centre, np.stack([c - s * mean / sd, s / sd], 1)


__all__ = ["MIN_CURVES", "fit_line", "log_ntk_terms"]
