"""The documented rule for the adaptive search's drop threshold, and its check.

Rule (fixed before looking at any evaluation table; ``lensllm.core.tuning``):
``p_stop = 0.95`` and the interval exponent ``gamma`` are not tuned here (p_stop by
convention, gamma by ``tune_intervals.py``).  Over ``p_keep`` in {0.01, 0.02, 0.05,
0.1, 0.2}, replay the search (selector ``lensllm``, target 1,638,400) on the training
tasks, on the curves as given and under 2 % multiplicative noise (seeds 0-2, the
robustness protocol's draws), at the FLOPs budgets 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5,
4, 5, 6, 7, 8, 10 %, and keep the value with the highest mean RelAcc; ties go to the
smaller ``p_keep`` (the safer one).  Printed: every value's mean per task, the
in-sample choice and leave-one-task-out (chosen on two tasks, scored on the third).

Usage: python benchmarks/tune_adaptive.py
"""

from __future__ import annotations

import time

import numpy as np

from lensllm.core.benchmark import TARGET, TASKS, TOKENS_PER_EXAMPLE, load_benchmark
from lensllm.core.tuning import choose_p_keep, p_keep_table


def main() -> None:
    start = time.perf_counter()
    table = p_keep_table([load_benchmark(t) for t in TASKS], TARGET, TOKENS_PER_EXAMPLE)
    for p, per_task in table.items():
        print(f"p_keep {p:5.2f}: " + ", ".join(f"{t} {np.mean(per_task[t]):5.1f}"
                                                for t in TASKS))
    print(f"in-sample choice: p_keep = {choose_p_keep(table, TASKS)}")
    for held in TASKS:
        p = choose_p_keep(table, [t for t in TASKS if t != held])
        print(f"leave-one-task-out {held:9s}: p_keep {p} -> mean RelAcc "
              f"{np.mean(table[p][held]):.1f} (min {min(table[p][held]):.1f})")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
