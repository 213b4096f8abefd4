"""Figures (matplotlib, Agg backend; imported only when a plot is asked for)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lensllm.core.curves import Curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


Band = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def extrapolation_band(predict: Callable, error_model, budget: int, level: float) -> Band:
    """Sizes -> (lower, upper): the back-tested ``level`` interval around ``predict``,
    as wide as the error expected that many doublings beyond the budget (zero at the
    budget, where nothing is extrapolated)."""
    from lensllm.core.uncertainty import conformal_interval

    def band(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.asarray(sizes, dtype=float)
        centre = np.asarray(predict(sizes), dtype=float)
        lo, hi = np.empty_like(centre), np.empty_like(centre)
        for k, n in enumerate(sizes):
            horizon = max(float(np.log2(n / budget)), 0.0)
            low, high = conformal_interval(centre[k:k + 1], error_model, horizon, level)
            lo[k], hi[k] = low[0], high[0]
        return lo, hi

    return band


def plot_curve_fit(path: str | Path, curve: Curve, predict: Callable | None,
                   budget: int | None, target: int, title: str | None = None,
                   band: tuple[float, float] | None = None,
                   true_at_target: float | None = None, label: str = "fit",
                   band_fn: Band | None = None, band_label: str = "interval") -> Path:
    """Log-log plot: observed points (used / held out), the fitted curve ``predict``
    (sizes -> losses), its extrapolation to the target, the target line, and optionally
    an interval at the target (``band``) and an interval band along the extrapolation
    (``band_fn``, see :func:`extrapolation_band`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    sizes = curve.sizes.astype(float)
    used = sizes <= (budget if budget is not None else np.inf)
    ax.scatter(sizes[used], curve.losses[used], color="C0", zorder=3, label="observed (used)")
    if np.any(~used):
        ax.scatter(sizes[~used], curve.losses[~used], facecolors="none", edgecolors="C0",
                   zorder=3, label="observed (held out)")
    lo = float(sizes.min()) / 2 if sizes.size else 1.0
    hi_fit = float(sizes[used].max()) if np.any(used) else lo * 2
    if predict is not None:
        xs = np.geomspace(lo, hi_fit, 200)
        ax.plot(xs, predict(xs), color="C1", label=label)
        xe = np.geomspace(hi_fit, target * 1.3, 200)
        ax.plot(xe, predict(xe), color="C1", ls="--", label="extrapolation")
        ax.scatter([target], [float(np.asarray(predict(np.array([target])))[0])], marker="x",
                   color="C1", zorder=4)
        if band_fn is not None:
            low, high = band_fn(xe)
            if np.isfinite(low).all() and np.isfinite(high).all():
                ax.fill_between(xe, low, high, color="C1", alpha=0.18, lw=0, label=band_label)
    if curve.zero_shot is not None:
        ax.axhline(curve.zero_shot, color="0.6", lw=0.8, ls=":", label="zero-shot loss")
    if band is not None:
        ax.errorbar([target], [np.mean(band)], yerr=[[np.mean(band) - band[0]],
                                                     [band[1] - np.mean(band)]],
                    color="C3", capsize=4, label="interval at target")
    if true_at_target is not None:
        ax.scatter([target], [true_at_target], marker="*", s=90, color="C2", zorder=5,
                   label="true loss at target")
    ax.axvline(target, color="C2", lw=0.8, ls="-.", label=f"target {target:,}")
    if budget is not None:
        ax.axvline(budget, color="0.4", lw=0.8, ls=":", label=f"budget {budget:,}")
    _finish_log_axes(ax, title or curve.model)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_all_fits(path: str | Path, curves: Sequence[Curve], predicts: Sequence[Callable],
                  bands: Sequence[Band | None], budget: int, target: int, title: str,
                  true_at_target: dict[str, float] | None = None,
                  band_label: str = "interval") -> Path:
    """Every candidate on one log-log axis: its points, fit (solid), extrapolation
    (dashed) with its interval band, and the true loss at the target when known."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 5.0), dpi=110)
    for k, (curve, predict, band_fn) in enumerate(zip(curves, predicts, bands, strict=True)):
        color = f"C{k % 10}"
        sizes = curve.sizes.astype(float)
        ax.scatter(sizes, curve.losses, color=color, s=14, zorder=3)
        if predict is None:
            continue
        lo = float(sizes.min()) / 1.5 if sizes.size else 1.0
        hi_fit = float(sizes.max()) if sizes.size else budget
        xs = np.geomspace(lo, hi_fit, 120)
        ax.plot(xs, predict(xs), color=color, label=curve.model)
        xe = np.geomspace(hi_fit, target * 1.3, 120)
        ax.plot(xe, predict(xe), color=color, ls="--")
        if band_fn is not None:
            low, high = band_fn(xe)
            if np.isfinite(low).all() and np.isfinite(high).all():
                ax.fill_between(xe, low, high, color=color, alpha=0.12, lw=0)
        if true_at_target and curve.model in true_at_target:
            ax.scatter([target], [true_at_target[curve.model]], marker="*", s=90,
                       color=color, edgecolors="k", linewidths=0.5, zorder=5)
    ax.axvline(target, color="0.3", lw=0.8, ls="-.", label=f"target {target:,}")
    ax.axvline(budget, color="0.5", lw=0.8, ls=":", label=f"budget {budget:,}")
    ax.plot([], [], color="0.4", ls="--", label="extrapolation")
    ax.fill_between([], [], [], color="0.4", alpha=0.2, lw=0, label=band_label)
    if true_at_target:
        ax.scatter([], [], marker="*", s=90, color="0.6", edgecolors="k", linewidths=0.5,
                   label="true loss at target")
    _finish_log_axes(ax, title)
    ax.legend(fontsize=7, loc="best", ncol=2)
    return _save(fig, path)


def _finish_log_axes(ax, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax)
    ax.set_xlabel("fine-tuning examples D")
    ax.set_ylabel("test loss")
    ax.set_title(title, fontsize=10)


def _save(fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _plain_log_ticks(ax) -> None:
    """Losses often span less than a decade, where log-axis labels are either missing
    or, on every minor tick, overlapping: label a handful of round values as plain
    numbers (1, 2, 5 x powers of ten over a decade or more), chosen for the final
    limits, so call this after everything is drawn."""
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter, ScalarFormatter

    low, high = ax.get_ylim()
    if low <= 0:
        return
    if high / low > 10:  # a decade or more: 1, 2, 5 x powers of ten
        decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
        ticks = [m * 10.0**k for k in decades for m in (1, 2, 5) if low <= m * 10.0**k <= high]
    else:
        ticks = [t for t in MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(
            low, high) if low <= t <= high and t > 0]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.yaxis.set_major_formatter(formatter)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(low, high)


def plot_metric_by_ratio(path: str | Path, task: str, metric: str, ratios: Sequence[str],
                         series: dict[str, Sequence[float]]) -> Path:
    """One line per method: a metric against the budget ratio."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    x = np.arange(len(ratios))
    for name, values in series.items():
        ax.plot(x, values, marker="o", label=name)
    ax.set_xticks(x, ratios)
    ax.set_xlabel("budget / target")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pareto(path: str | Path, adaptive: list[dict], fixed: list[dict],
                label: str = "adaptive search", fixed_label: str = "AtS, fixed ratio") -> Path:
    """Mean RelAcc against the mean FLOPs share (log x): adaptive search vs fixed ratios."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for rows, name, marker in ((adaptive, label, "o"), (fixed, fixed_label, "s")):
        if not rows:
            continue
        x = [100 * float(np.mean(list(r["flops"].values()))) if isinstance(r["flops"], dict)
             else 100 * r["flops"] for r in rows]
        y = [float(np.mean(list(r["relacc"].values()))) for r in rows]
        order = np.argsort(x)
        ax.plot(np.array(x)[order], np.array(y)[order], marker=marker, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs, % of fine-tuning every candidate at the target")
    ax.set_ylabel("mean RelAcc x100")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def plot_hessian(path: str | Path, model: str, sizes: Sequence[int],
                 traces: Sequence[float], distances: Sequence[float | None],
                 gaps: Sequence[float | None], pretrained_trace: float | None = None,
                 target: int | None = None) -> Path:
    """One candidate's Hessian measurements against the fine-tuning size (log x): left,
    the Hessian trace at the fine-tuned weights with the pretrained weights' trace as a
    reference line; right, the Hessian-weighted distance from the pretrained weights
    and, on its own axis, the train-test gap.  The y axes are linear: Hutchinson
    estimates of an indefinite Hessian can be negative."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.9), dpi=110)
    x = np.asarray(sizes, dtype=float)
    left.plot(x, traces, marker="o", color="C0", label="fine-tuned weights")
    if pretrained_trace is not None:
        left.axhline(pretrained_trace, color="0.4", lw=0.9, ls="--",
                     label="pretrained weights")
    left.set_ylabel("Hessian trace (probe loss)")
    left.set_title(f"{model}: Hessian trace", fontsize=10)
    left.legend(fontsize=7, loc="best")
    handles = []
    known = [(n, d) for n, d in zip(x, distances, strict=True) if d is not None]
    if known:
        handles += right.plot(*zip(*known, strict=True), marker="o", color="C1",
                              label="Hessian-weighted distance")
    right.set_ylabel("(θ-θ0)ᵀ H (θ-θ0)")
    gap_points = [(n, g) for n, g in zip(x, gaps, strict=True) if g is not None]
    if gap_points:
        twin = right.twinx()
        handles += twin.plot(*zip(*gap_points, strict=True), marker="s", color="C2",
                             ls="--", label="test - train loss")
        twin.set_ylabel("gap (test - train loss)")
    right.set_title(f"{model}: distance and gap", fontsize=10)
    if handles:
        right.legend(handles=handles, fontsize=7, loc="best")
    from matplotlib.ticker import NullFormatter

    for ax in (left, right):
        ax.set_xscale("log")
        # the measured sizes as plain numbers (few of them; "2 x 10^1" reads badly)
        ax.set_xticks(x, [f"{int(n):,}" for n in x])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("fine-tuning examples D")
        ax.grid(alpha=0.3, which="both")
        if target is not None and x.size and target <= x.max():
            ax.axvline(target, color="C3", lw=0.8, ls="-.")
    return _save(fig, path)
