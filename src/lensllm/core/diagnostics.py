"""Numbers that describe a curve or a fine-tuning run rather than rank candidates: the
knee of a loss curve, a rank correlation that states its sample size, and the terms of
the Hessian-based PAC-Bayes bound the LensLLM paper builds on (pure numpy/scipy).

* :func:`knee_size` -- where a curve enters its power phase, by one fixed rule: the
  local log-log slope at each measured size (least squares over the three sizes
  centred on it) is compared with the curve's steepest local slope; the knee is the
  first size at least half as steep.  A curve no local slope of which falls has no
  knee.
* :func:`spearman` -- Spearman's rank correlation with its two-sided p-value and the
  number of pairs used (pairs with a missing or non-finite value are dropped).
* :func:`hessian_distance_measure` / :func:`complexity_term` -- Ju et al. (2022) bound
  the generalisation gap of a fine-tuned network by a complexity term built from the
  layer-wise Hessian-weighted distances ``d_l = δ_lᵀ H_l δ_l`` (δ = θ - θ0): the
  distance measure is ``S = Σ_l sqrt(d_l)``.  Their bound uses the positive part of the
  Hessian, so ``d_l >= 0`` there; an estimate at weights where the loss is not convex
  along δ_l can be negative, and counts as zero here (:func:`negative_layers` says how
  many did).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lensllm.errors import InputError

#: local log-log slopes this close to zero are flat (a constant curve's least-squares
#: slopes are rounding noise of either sign)
FLAT_SLOPE = 1e-9
#: the forms of the complexity term: ``"sum-sqrt"`` S / sqrt(n) (the distance measure
#: over the square root of the sample size), ``"ju2022"`` sqrt(S / n) (the shape of the
#: term in Ju et al.'s theorem, constants left out)
COMPLEXITY_FORMS = ("sum-sqrt", "ju2022")


def _curve_arrays(sizes: Sequence[float], losses: Sequence[float]
                  ) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(sizes, dtype=float).ravel()
    y = np.asarray(losses, dtype=float).ravel()
    if n.shape != y.shape:
        raise InputError("knee: sizes and losses differ in length")
    if not (np.all(np.isfinite(n)) and np.all(n > 0)):
        raise InputError("knee: sizes must be finite and > 0 (leave the zero-shot point out)")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise InputError("knee: losses must be finite and > 0")
    order = np.argsort(n, kind="stable")
    n, y = n[order], y[order]
    if np.any(n[1:] == n[:-1]):
        raise InputError("knee: each size may appear once")
    return n, y


def local_slopes(sizes: Sequence[float], losses: Sequence[float], window: int = 3
                 ) -> np.ndarray:
    """Least-squares slope of log loss on log size over each run of ``window``
    consecutive sizes (sorted by size): ``len(sizes) - window + 1`` slopes."""
    n, y = _curve_arrays(sizes, losses)
    if window < 2 or n.size < window:
        raise InputError(f"knee: need at least {max(window, 2)} sizes, got {n.size}")
    x, v = np.log(n), np.log(y)
    out = np.empty(n.size - window + 1)
    for i in range(out.size):
        out[i] = np.polyfit(x[i:i + window], v[i:i + window], 1)[0]
    return out


def knee_size(sizes: Sequence[float], losses: Sequence[float], fraction: float = 0.5,
              window: int = 3) -> float | None:
    """The first measured size whose local log-log slope (over the ``window`` sizes
    centred on it) is at least ``fraction`` of the curve's steepest local slope, or None
    when no local slope falls.  The zero-shot point (size 0) has no log size: leave it
    out.

    The steepest slope, not the last one, is the reference: a curve that approaches its
    floor (or whose runs stop at a step cap) flattens again at the end, and half of that
    final slope would put the knee at the first size of almost any curve.  Slopes within
    :data:`FLAT_SLOPE` of zero count as flat."""
    if not 0 < fraction < 1:
        raise InputError(f"knee: fraction must be in (0, 1), got {fraction}")
    if window < 2 or window % 2 == 0:
        raise InputError(f"knee: window must be an odd number of sizes >= 3, got {window}")
    n, _ = _curve_arrays(sizes, losses)
    slopes = local_slopes(sizes, losses, window)
    steepest = float(slopes.min())
    if not steepest < -FLAT_SLOPE:
        return None
    # The steepest slope itself qualifies, so some size always does.
    first = int(np.flatnonzero(slopes <= fraction * steepest)[0])
    return float(n[first + window // 2])


@dataclass(frozen=True)
class Correlation:
    """A rank correlation: ρ, its two-sided p-value and the pairs it used (NaN ρ and p
    when fewer than 3 pairs remain or one side is constant)."""

    rho: float
    p: float
    n: int


def spearman(x: Iterable[float | None], y: Iterable[float | None]) -> Correlation:
    """Spearman's ρ of the pairs where both values are finite numbers."""
    xs, ys = list(x), list(y)
    if len(xs) != len(ys):
        raise InputError(f"spearman: {len(xs)} values against {len(ys)}")

    def ok(v: float | None) -> bool:
        return v is not None and math.isfinite(float(v))

    pairs = [(float(a), float(b)) for a, b in zip(xs, ys, strict=True) if ok(a) and ok(b)]
    if len(pairs) < 3:
        return Correlation(math.nan, math.nan, len(pairs))
    a, b = np.array(pairs).T
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return Correlation(math.nan, math.nan, len(pairs))
    result = stats.spearmanr(a, b)
    return Correlation(float(result.statistic), float(result.pvalue), len(pairs))


def _distances(distances: Mapping[str, float] | Sequence[float]) -> np.ndarray:
    values = list(distances.values()) if isinstance(distances, Mapping) else list(distances)
    try:
        out = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise InputError("hessian distances must be numbers, one per layer") from None
    if out.size == 0 or not np.all(np.isfinite(out)):
        raise InputError("hessian distances must be finite numbers, at least one layer")
    return out


def negative_layers(distances: Mapping[str, float] | Sequence[float]) -> int:
    """How many layers have a negative Hessian-weighted distance (counted as zero)."""
    return int(np.count_nonzero(_distances(distances) < 0))


def hessian_distance_measure(distances: Mapping[str, float] | Sequence[float]) -> float:
    """``S = Σ_l sqrt(max(d_l, 0))`` over the layers' Hessian-weighted distances."""
    return float(np.sqrt(np.clip(_distances(distances), 0.0, None)).sum())


def complexity_term(distances: Mapping[str, float] | Sequence[float], n: float,
                    form: str = "sum-sqrt") -> float:
    """The bound's complexity term for a run on ``n`` examples (see
    :data:`COMPLEXITY_FORMS`)."""
    if form not in COMPLEXITY_FORMS:
        raise InputError(f"unknown complexity form {form!r}; use "
                         f"{' or '.join(COMPLEXITY_FORMS)}")
    if not (math.isfinite(n) and n > 0):
        raise InputError(f"complexity term: the sample size must be > 0, got {n}")
    measure = hessian_distance_measure(distances)
    return measure / math.sqrt(n) if form == "sum-sqrt" else math.sqrt(measure / n)
