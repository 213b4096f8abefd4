"""The documented rule for the interval growth exponent gamma, and its check.

Intervals widen with the horizon as rmse(H) = s * H**gamma (lensllm.core.uncertainty).
Rule: over gamma in {1, 1.25, 1.5, 1.75, 2}, keep the value whose mean coverage of the
90 % interval over the training tasks' 21 protocol cells is closest to 90 %.  Printed:
coverage per task for every gamma, the in-sample choice, and leave-one-task-out.

Usage: python benchmarks/tune_intervals.py [--method lensllm]
"""

from __future__ import annotations

import argparse

import numpy as np

from lensllm.core.benchmark import BUDGETS, TARGET, TASKS, load_benchmark
from lensllm.core.evaluation import calibration
from lensllm.core.selectors import make_selector

GAMMAS = (1.0, 1.25, 1.5, 1.75, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lensllm")
    args = parser.parse_args()
    tasks = [load_benchmark(t) for t in TASKS]
    coverage = {}
    for gamma in GAMMAS:
        selector = make_selector(args.method, interval_gamma=gamma)
        cells = calibration(tasks, selector, BUDGETS, TARGET)
        coverage[gamma] = {t: float(np.mean([c.coverage for c in cells if c.task == t]))
                           for t in TASKS}
        print(f"gamma {gamma:4.2f}: " + ", ".join(f"{t} {v:5.1f}"
                                                  for t, v in coverage[gamma].items())
              + f"; all {np.mean(list(coverage[gamma].values())):5.1f}")

    def pick(train):
        return min(GAMMAS, key=lambda g: abs(np.mean([coverage[g][t] for t in train]) - 90))

    print(f"in-sample choice: gamma = {pick(TASKS)}")
    for held in TASKS:
        gamma = pick([t for t in TASKS if t != held])
        print(f"leave-one-task-out {held:9s}: gamma {gamma} -> coverage "
              f"{coverage[gamma][held]:.1f}")


if __name__ == "__main__":
    main()
