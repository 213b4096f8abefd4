"""The documented rule for the adaptive search's drop threshold, and its check.

Rule (fixed before looking at any evaluation table): ``p_stop = 0.95`` and the
interval exponent ``gamma`` are not tuned here (p_stop by convention, gamma by
``tune_intervals.py``).  Over ``p_keep`` in {0.01, 0.02, 0.05, 0.1, 0.2}, replay the
search (selector ``lensllm``, target 1,638,400) on the training tasks, on the curves
as given and under 2 % multiplicative noise (seeds 0-2, the robustness protocol's
draws), at the FLOPs budgets 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10 %,
and keep the value with the highest mean RelAcc; ties go to the smaller ``p_keep``
(the safer one).  Printed: every value's mean per task, the in-sample choice and
leave-one-task-out (chosen on two tasks, scored on the third).

Usage: python benchmarks/tune_adaptive.py
"""

from __future__ import annotations

import time

import numpy as np

from lensllm.core.benchmark import TARGET, TASKS, TOKENS_PER_EXAMPLE, load_benchmark
from lensllm.core.evaluation import relacc
from lensllm.core.robustness import RobustnessSettings, build_variants
from lensllm.core.search import AdaptiveSettings, sweep

P_KEEP = (0.01, 0.02, 0.05, 0.1, 0.2)
BUDGETS = (0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.07,
           0.08, 0.1)


def main() -> None:
    start = time.perf_counter()
    variants = build_variants([load_benchmark(t) for t in TASKS], TARGET, RobustnessSettings(
        subset_sizes=(), noise_levels=(0.02,), noise_seeds=3, targets=()))
    # table[p_keep][task] = RelAcc per (variant case, budget)
    table: dict[float, dict[str, list[float]]] = {p: {t: [] for t in TASKS} for p in P_KEEP}
    for p in P_KEEP:
        for variant in variants:
            for case in variant.cases:
                task = case.curves.task
                results = sweep(case.curves, TARGET, TOKENS_PER_EXAMPLE[task], BUDGETS,
                                "lensllm", AdaptiveSettings(p_keep=p))
                table[p][task] += [relacc(float(case.truth[case.curves.models.index(r.chosen)]),
                                          case.truth) for r in results]
        print(f"p_keep {p:5.2f}: " + ", ".join(f"{t} {np.mean(table[p][t]):5.1f}"
                                                for t in TASKS), flush=True)

    def pick(train):
        return max(P_KEEP, key=lambda p: (round(np.mean([v for t in train for v in table[p][t]]),
                                                9), -p))

    print(f"in-sample choice: p_keep = {pick(TASKS)}")
    for held in TASKS:
        p = pick([t for t in TASKS if t != held])
        print(f"leave-one-task-out {held:9s}: p_keep {p} -> mean RelAcc "
              f"{np.mean(table[p][held]):.1f} (min {min(table[p][held]):.1f})")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
