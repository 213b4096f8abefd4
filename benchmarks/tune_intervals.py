"""The documented rule for the interval exponent gamma, and its check.

Intervals are split-conformal over back-tests with a horizon-dependent scale
``H**gamma`` (lensllm.core.uncertainty).  Rule (``lensllm.core.tuning.choose_gamma``):
over gamma in 1.0, 1.05, ..., 2.0, keep the smallest value whose 90 % intervals cover
at least 75 % of the candidates in every training cell (task x ratio, protocol budgets
target/8 ... target/512); if none does, the value with the best worst cell.  Printed:
overall coverage for each gamma, coverage per cell for the in-sample choice, and
leave-one-task-out (chosen on two tasks, scored on the third) per cell and pooled.

Usage: python benchmarks/tune_intervals.py [--method lensllm] [--suite lin2024]
"""

from __future__ import annotations

import argparse

import numpy as np

from lensllm.core.benchmark import ratio_label
from lensllm.core.suites import load_suite
from lensllm.core.tuning import GAMMAS, choose_gamma, coverage_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lensllm")
    parser.add_argument("--suite", default="lin2024")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    tasks = [c.task for c in suite.curve_sets]
    budgets, target = suite.budgets, suite.target
    table = coverage_table(suite.curve_sets, target, budgets, args.method)
    for gamma in GAMMAS:
        cells = table[gamma]
        print(f"gamma {gamma:4.2f}: overall {np.mean(list(cells.values())):5.1f}, worst cell "
              f"{min(cells.values()):5.1f}; " + ", ".join(
                  f"{t} {np.mean([v for (tt, _), v in cells.items() if tt == t]):5.1f}"
                  for t in tasks))
    gamma = choose_gamma(table, tasks)
    ratios = " ... ".join(ratio_label(b, target) for b in (budgets[0], budgets[-1]))
    print(f"in-sample choice: gamma = {gamma}; coverage per cell (ratios {ratios}):")
    for t in tasks:
        print(f"  {t:9s} " + " ".join(f"{table[gamma][(t, b)]:5.1f}" for b in budgets))
    held_out = []
    for held in tasks:
        g = choose_gamma(table, [t for t in tasks if t != held])
        cells = {b: table[g][(held, b)] for b in budgets}
        held_out += list(cells.values())
        worst = min(cells, key=cells.get)
        print(f"leave-one-task-out {held:9s}: gamma {g} -> coverage "
              f"{np.mean(list(cells.values())):.1f}, worst cell "
              f"{ratio_label(worst, target)} {cells[worst]:.1f}; per cell "
              + " ".join(f"{v:5.1f}" for v in cells.values()))
    print(f"leave-one-task-out, all held-out cells: coverage {np.mean(held_out):.1f}, "
          f"worst cell {min(held_out):.1f}")


if __name__ == "__main__":
    main()
