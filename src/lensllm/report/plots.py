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


def plot_curve_fit(path: str | Path, curve: Curve, predict: Callable | None,
                   budget: int | None, target: int, title: str | None = None,
                   band: tuple[float, float] | None = None,
                   true_at_target: float | None = None, label: str = "fit") -> Path:
    """Log-log plot: observed points (used / held out), the fitted curve ``predict``
    (sizes -> losses), its extrapolation to the target, the target line, and optionally
    an interval at the target."""
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
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("fine-tuning examples D")
    ax.set_ylabel("test loss")
    ax.set_title(title or curve.model, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _plain_log_ticks(axis) -> None:
    """Losses span less than a decade: label log-axis ticks as plain numbers."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=np.arange(1, 10) / 1.0, numticks=12))
    axis.set_minor_locator(LogLocator(base=10, subs=np.arange(1, 100) / 10.0, numticks=60))
    axis.set_major_formatter(FormatStrFormatter("%.3g"))
    axis.set_minor_formatter(FormatStrFormatter("%.3g"))


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
