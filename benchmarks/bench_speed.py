"""Speed of ``lensllm bench`` against a naive fitting reference, measured in one process.

Prints:
* the wall time of the whole ``lensllm bench`` (all default methods, 3 tasks x 7 budgets),
  run twice (the first includes imports);
* per-fit time of the fitting engine versus the papers' way of fitting -- per curve,
  ``scipy.optimize.minimize`` (BFGS) on the log-space squared error from random starts
  (10 for the vanilla law, as Lin et al.'s code; 3 for the rectified law) -- on the same
  curves, and the objective each reaches;
* the naive reference's time for all the law fits of the protocol (extrapolated from its
  per-fit time on a sample, because running it in full takes minutes) and the ratio.

Usage: python benchmarks/bench_speed.py [--sample 60]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.optimize import minimize


def bench_wall_time() -> float:
    from lensllm.core.benchmark import BUDGETS, TARGET, TASKS, load_benchmark
    from lensllm.core.evaluation import evaluate
    from lensllm.core.selectors import DEFAULT_METHODS

    start = time.perf_counter()
    evaluate([load_benchmark(t) for t in TASKS], methods=list(DEFAULT_METHODS),
             budgets=BUDGETS, target=TARGET)
    return time.perf_counter() - start


def naive_fit(law, sizes, losses, restarts: int, seed: int) -> tuple[float, np.ndarray]:
    """Lin et al.-style fit: BFGS on log-space MSE from random starts; best of restarts."""
    rng = np.random.default_rng(seed)
    log_y = np.log(losses)

    def objective(theta):
        with np.errstate(all="ignore"):
            pred = law.predict(sizes, theta)
            value = float(np.mean((np.log(pred) - log_y) ** 2))
        return value if math.isfinite(value) else 1e10

    best = (math.inf, None)
    for _ in range(restarts):
        x0 = np.concatenate([[rng.uniform(0, 5), rng.uniform(-2, 1)],
                             [rng.uniform(lo, min(hi, lo + 3)) for lo, hi in
                              law.shape_bounds()]])
        result = minimize(objective, x0, method="BFGS")
        if result.fun < best[0]:
            best = (float(result.fun), result.x)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=60, help="curves for the naive timing")
    args = parser.parse_args()

    from lensllm.core.benchmark import BUDGETS, TASKS, load_benchmark
    from lensllm.core.laws import PowerLaw, RectifiedLaw
    from lensllm.core.laws.fit import fit_curves
    from lensllm.core.selectors import DEFAULT_METHODS
    from lensllm.core.selectors.lawfit import fit_points

    first = bench_wall_time()
    second = bench_wall_time()
    print(f"lensllm bench ({len(DEFAULT_METHODS)} methods, 21 cells): "
          f"{first:.2f} s (first run, with imports), {second:.2f} s (second run)")

    curves = [c.within(b) for t in TASKS for b in BUDGETS for c in load_benchmark(t)]
    rng = np.random.default_rng(0)
    sample = [curves[i] for i in rng.choice(len(curves), args.sample, replace=False)]
    law_fits_in_bench = 0
    naive_total = 0.0
    print(f"\nper-fit cost on {len(sample)} sampled curves:")
    print(f"{'law':10s} {'engine ms':>10s} {'naive ms':>10s} {'ratio':>7s} "
          f"{'engine MSE <= naive':>20s}")
    for law, restarts, methods in ((PowerLaw(), 10, 1), (RectifiedLaw(), 3, 2)):
        points = [fit_points(c, law) for c in sample]
        start = time.perf_counter()
        fits = fit_curves(law, [p[0] for p in points], [p[1] for p in points])
        engine = (time.perf_counter() - start) / len(sample)
        start = time.perf_counter()
        naive = [naive_fit(law, p[0], p[1], restarts, seed=i) for i, p in enumerate(points)]
        naive_time = (time.perf_counter() - start) / len(sample)
        engine_mse = np.array([np.mean(f.residuals**2) for f in fits])
        naive_mse = np.array([n[0] for n in naive])
        better = np.mean(engine_mse <= naive_mse * (1 + 1e-6) + 1e-12)
        print(f"{law.name:10s} {1e3 * engine:10.2f} {1e3 * naive_time:10.1f} "
              f"{naive_time / engine:7.1f} {100 * better:19.0f}%")
        # vanilla once, rectified twice (rectified and lensllm-paper without NTK data)
        law_fits_in_bench += methods * len(curves)
        naive_total += methods * len(curves) * naive_time
    print(f"\nnaive reference for the {law_fits_in_bench} law fits of the protocol: "
          f"~{naive_total:.0f} s (extrapolated)")
    print(f"ratio naive / lensllm bench: {naive_total / second:.0f}x")


if __name__ == "__main__":
    main()
