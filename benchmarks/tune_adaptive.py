"""The documented rule that sets the adaptive search's two thresholds, and its check.

Rule: over the grid fill in {prefix, first-fit, value} x p_keep in {0.005, 0.01, 0.02,
0.05} x p_stop in {0.9, 0.95, 0.99},
replay the search (selector ``lensllm``, target 1,638,400) on the training tasks at
FLOPs budgets of 1 % and 3 % of fine-tuning every candidate at the target, and keep the
setting with the highest mean RelAcc; ties go to the lower mean FLOPs share, then to
the defaults.  Printed: every setting's in-sample result, the in-sample choice, and
leave-one-task-out (chosen on two tasks, scored on the third).

Usage: python benchmarks/tune_adaptive.py
"""

from __future__ import annotations

import itertools

import numpy as np

from lensllm.core.benchmark import TARGET, TASKS, TOKENS_PER_EXAMPLE, load_benchmark
from lensllm.core.evaluation import relacc
from lensllm.core.search import HalvingSettings, replay

FILL = ("prefix", "first-fit", "value")
P_KEEP = (0.005, 0.01, 0.02, 0.05)
P_STOP = (0.9, 0.95, 0.99)
BUDGETS = (0.01, 0.03)
DEFAULT = HalvingSettings()


def score(task: str, fill: str, p_keep: float, p_stop: float, budget: float
          ) -> tuple[float, float]:
    curves = load_benchmark(task)
    truth = curves.losses_at(TARGET, "")
    result = replay(curves, TARGET, TOKENS_PER_EXAMPLE[task], "lensllm",
                    HalvingSettings(fill=fill, p_keep=p_keep, p_stop=p_stop,
                                    flops_fraction=budget))
    return relacc(truth[curves.models.index(result.chosen)], truth), result.flops_fraction


def main() -> None:
    grid = list(itertools.product(FILL, P_KEEP, P_STOP))
    table = {(*setting, t, b): score(t, *setting, b)
             for setting in grid for t in TASKS for b in BUDGETS}

    def objective(setting, tasks):
        cells = [table[(*setting, t, b)] for t in tasks for b in BUDGETS]
        is_default = setting == (DEFAULT.fill, DEFAULT.p_keep, DEFAULT.p_stop)
        return (np.mean([c[0] for c in cells]), -np.mean([c[1] for c in cells]), is_default)

    settings = grid
    print("setting (fill, p_keep, p_stop): mean RelAcc / mean FLOPs % over all tasks, "
          "1 % and 3 % budgets")
    for setting in settings:
        rel, neg_flops, _ = objective(setting, TASKS)
        print(f"  {setting}: {rel:6.2f} / {-100 * neg_flops:5.2f} %")
    best = max(settings, key=lambda s: objective(s, TASKS))
    print(f"in-sample choice: fill={best[0]}, p_keep={best[1]}, p_stop={best[2]}")
    print("\nleave-one-task-out (held-out task scored with the setting chosen on the others):")
    for held in TASKS:
        train = [t for t in TASKS if t != held]
        chosen = max(settings, key=lambda s: objective(s, train))
        cells = [table[(*chosen, held, b)] for b in BUDGETS]
        print(f"  {held:9s} setting {chosen}: RelAcc "
              + ", ".join(f"{b:.0%} budget {r:.1f} ({100 * f:.2f} % used)"
                          for b, (r, f) in zip(BUDGETS, cells, strict=True)))


if __name__ == "__main__":
    main()
