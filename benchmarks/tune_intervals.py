"""The documented rule for the interval exponent gamma, and its check.

Intervals are split-conformal over back-tests with a horizon-dependent scale
``H**gamma`` (lensllm.core.uncertainty).  Rule: over gamma in 1.0, 1.05, ..., 2.0, keep
the smallest value whose 90 % intervals cover at least 75 % of the candidates in every
training cell (task x ratio, protocol budgets target/8 ... target/512); if none does,
the value with the best worst cell.  Printed: coverage per cell for the in-sample
choice, overall coverage for each gamma, and leave-one-task-out (chosen on two tasks,
scored on the third).

Usage: python benchmarks/tune_intervals.py [--method lensllm]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from lensllm.core.benchmark import BUDGETS, TARGET, TASKS, load_benchmark, ratio_label
from lensllm.core.selectors import make_selector
from lensllm.core.uncertainty import conformal_interval, conformal_models

GAMMAS = tuple(round(1.0 + 0.05 * k, 2) for k in range(21))


def coverage_table(method: str) -> dict[float, dict[tuple[str, int], float]]:
    selector = make_selector(method)
    tasks = [load_benchmark(t) for t in TASKS]
    requests = [(t, b, TARGET) for t in tasks for b in BUDGETS]
    cache: dict[tuple, np.ndarray] = {}

    def predictor(reqs):
        missing = [r for r in reqs if (r[0].task, r[1], r[2]) not in cache]
        for r, sel in zip(missing, selector.select_many(missing) if missing else [],
                          strict=True):
            cache[(r[0].task, r[1], r[2])] = sel.predicted
        return [cache[(r[0].task, r[1], r[2])] for r in reqs]

    predicted = predictor(requests)
    out: dict[float, dict[tuple[str, int], float]] = {}
    for gamma in GAMMAS:
        models = conformal_models(predictor, requests, max(selector.required_sizes, 2), gamma)
        out[gamma] = {}
        for (task, budget, _), pred, model in zip(requests, predicted, models, strict=True):
            lo, hi = conformal_interval(pred, model, math.log2(TARGET / budget))
            truth = task.losses_at(TARGET, "")
            out[gamma][(task.task, budget)] = 100.0 * float(np.mean((truth >= lo) &
                                                                    (truth <= hi)))
    return out


def choose(table, train) -> float:
    for gamma in GAMMAS:
        if min(v for (t, _), v in table[gamma].items() if t in train) >= 75.0:
            return gamma
    return max(GAMMAS, key=lambda g: min(v for (t, _), v in table[g].items() if t in train))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lensllm")
    args = parser.parse_args()
    table = coverage_table(args.method)
    for gamma in GAMMAS:
        cells = table[gamma]
        print(f"gamma {gamma:4.2f}: overall {np.mean(list(cells.values())):5.1f}, worst cell "
              f"{min(cells.values()):5.1f}; " + ", ".join(
                  f"{t} {np.mean([v for (tt, _), v in cells.items() if tt == t]):5.1f}"
                  for t in TASKS))
    gamma = choose(table, TASKS)
    print(f"in-sample choice: gamma = {gamma}; coverage per cell (ratios 1/8 ... 1/512):")
    for t in TASKS:
        print(f"  {t:9s} " + " ".join(f"{table[gamma][(t, b)]:5.1f}" for b in BUDGETS))
    for held in TASKS:
        g = choose(table, [t for t in TASKS if t != held])
        cells = {b: table[g][(held, b)] for b in BUDGETS}
        worst = min(cells, key=cells.get)
        print(f"leave-one-task-out {held:9s}: gamma {g} -> coverage "
              f"{np.mean(list(cells.values())):.1f}, worst cell "
              f"{ratio_label(worst, TARGET)} {cells[worst]:.1f}")


if __name__ == "__main__":
    main()
