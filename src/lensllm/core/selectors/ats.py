"""AtS ("Accept then Stop", Lin et al. ICML 2024): fit a line in log-log space to the
power-law phase of each curve and extrapolate it.

Per curve, over the measured sizes <= budget (zero-shot excluded): start from the k
largest sizes, fit a line, compute the standard deviation σ of its residuals (ddof 0);
test the next smaller size: if its |residual| / σ > δ stop, else accept it and repeat.
The accepted points are the power phase.  As in the authors' reference code, the
smallest size is never used -- when every point passes, the fit still starts at the
second-smallest size -- and a curve with <= k sizes is fitted on all of them.  With
these rules the selector reproduces the published tables (see tests).
"""

from __future__ import annotations

import numpy as np

from lensllm.core.curves import CurveSet
from lensllm.core.selectors.base import INTERVAL_GAMMA, Selection, Selector
from lensllm.core.selectors.settings import Setting, number, whole


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of y on x."""
    xm, ym = x.mean(), y.mean()
    dx = x - xm
    slope = float((dx * (y - ym)).sum() / (dx * dx).sum())
    return slope, float(ym - slope * xm)


def power_phase_start(log_n: np.ndarray, log_y: np.ndarray, k: int = 3,
                      delta: float = 5.0) -> int:
    """Index of the first point of the power phase (points sorted by size)."""
    m = log_n.size
    if m <= k:
        return 0
    fitted = k
    for fitted in range(k, m):
        x, y = log_n[-fitted:], log_y[-fitted:]
        slope, intercept = line_fit(x, y)
        sigma = float(np.std(y - (slope * x + intercept)))
        residual = abs(log_y[-fitted - 1] - (slope * log_n[-fitted - 1] + intercept))
        # σ = 0 (collinear points): any deviation stops, none continues.
        outlier = residual > delta * sigma if sigma > 0 else residual > 0
        if outlier:
            break
    return m - fitted


class AtS(Selector):
    """Extrapolate the power-law phase of each curve with a log-log line."""

    name = "ats"
    score_label = "predicted loss"
    required_sizes = 3
    settings = (
        Setting("k", whole(2), 3, "sizes in the first fitted line (the largest ones)"),
        Setting("delta", number(above=0), 5.0,
                "stop at the first smaller size whose residual exceeds delta sigma"),
        INTERVAL_GAMMA,
    )

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        lines = []
        starts = []
        for curve in curves:
            log_n, log_y = np.log(curve.sizes.astype(float)), np.log(curve.losses)
            start = power_phase_start(log_n, log_y, self.k, self.delta)
            lines.append(line_fit(log_n[start:], log_y[start:]))
            starts.append(int(curve.sizes[start]))

        def predict(i: int, sizes) -> np.ndarray:
            slope, intercept = lines[i]
            return np.exp(slope * np.log(np.asarray(sizes, dtype=float)) + intercept)

        predicted = np.array([float(predict(i, target)) for i in range(len(curves))])
        return self._selection(curves, budget, target, predicted, predicted=predicted,
                               details={"power_phase_from": starts, "predict": predict})
