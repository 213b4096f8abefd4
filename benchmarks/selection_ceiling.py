"""The ceiling of fixed-budget selection: per cell, the best RelAcc any method reaches.

For every task x ratio cell of a suite (the curves as given, and under multiplicative
noise, seeded), every method in a fixed list selects from the same observed points;
the *ceiling* of a cell is the highest RelAcc among them -- a hindsight oracle over
methods, which no single method can beat on every cell without knowing the truth.
Next to it, the FLOPs share of the ratio (every candidate trained on every size up to
the budget) and which methods reach the ceiling.

What it is for: issue 9 asks the adaptive search for mean RelAcc >= 98 with no task
below 95 at every FLOPs budget from 1 to 10 %.  Where the ceiling of a task is below 95
at the ratios a budget can afford, that goal asks for a predictor better than every
one we have, chosen per cell in hindsight.

The methods: every registered selector at its defaults, AtS with k in {2, 4, 5} and
delta in {2, 10}, and the pooled fit without its evidence prior
(``lensllm[evidence_prior=0]``) -- the list is fixed here, not chosen by the result; a
method the suite cannot serve (its own input check fails) is left out with a note.

Usage: python benchmarks/selection_ceiling.py [--suite lin2024] [--noise 0.02]
       [--seeds 3]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from lensllm.core.benchmark import ratio_label
from lensllm.core.robustness import RobustnessSettings, build_variants, score_cases
from lensllm.core.search import fixed_budget_fraction
from lensllm.core.selectors import SELECTORS
from lensllm.core.suites import load_suite
from lensllm.errors import InputError

EXTRA_SETTINGS = ("ats[k=2]", "ats[k=4]", "ats[k=5]", "ats[delta=2]", "ats[delta=10]",
                  "lensllm[evidence_prior=0]")


def ceiling_rows(suite_name: str, noise: float = 0.0, seeds: int = 3,
                 methods: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """One row per variant x task x budget: the ceiling (per seed, the best RelAcc of
    any method; then the mean over seeds), ``lensllm``'s and AtS's RelAcc, the FLOPs
    share of the ratio and the methods that reach the ceiling on every seed; and one
    note per method the suite's curves cannot serve (its own check says why, e.g.
    ``nlpmetrics`` without weight-spectrum metrics), left out of the ceiling."""
    suite = load_suite(suite_name)
    settings = RobustnessSettings(subset_sizes=(), noise_levels=(noise,) if noise else (),
                                  noise_seeds=seeds, targets=())
    variants = build_variants(suite.curve_sets, suite.target, settings)
    sizes = sorted({int(n) for t in suite.curve_sets for c in t for n in c.sizes})
    methods = list(methods or [*SELECTORS, *EXTRA_SETTINGS])
    rows, skipped = [], []
    for variant in variants:
        # (task, budget) -> method -> RelAcc per seed
        scores: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list))
        for method in list(methods):
            try:
                cells = score_cases(method, variant.cases, variant.name)
            except InputError as error:
                skipped.append(f"skipped {method}: {error}")
                methods.remove(method)
                continue
            for cell in cells:
                scores[(cell.task, cell.budget)][cell.method].append(cell.relacc)
        for (task, budget), per_method in sorted(scores.items(),
                                                 key=lambda kv: (kv[0][0], -kv[0][1])):
            table = np.array([per_method[m] for m in per_method])  # methods x seeds
            best = table.max(axis=0)
            rows.append({
                "variant": variant.name, "task": task, "budget": budget,
                "ratio": ratio_label(budget, suite.target),
                "flops_percent": 100 * fixed_budget_fraction(budget, suite.target, sizes),
                "ceiling": float(best.mean()),
                "by_method": {m: float(np.mean(v)) for m, v in per_method.items()},
                "reached_by": [m for m, row in zip(per_method, table, strict=True)
                               if np.all(np.isclose(row, best))],
            })
    return rows, skipped


def print_rows(suite_name: str, rows: list[dict]) -> None:
    variant = None
    for row in rows:
        if row["variant"] != variant:
            variant = row["variant"]
            print(f"\n{suite_name}, {variant}: RelAcc ceiling per cell (with seeds: "
                  f"the mean over seeds of each seed's best)")
            print(f"{'task':<14} {'ratio':>6} {'FLOPs %':>8} {'ceiling':>8} {'lensllm':>8} "
                  f"{'ats':>6}  reached by (every seed)")
        reached = row["reached_by"]
        print(f"{row['task']:<14} {row['ratio']:>6} {row['flops_percent']:>8.2f} "
              f"{row['ceiling']:>8.1f} {row['by_method'].get('lensllm', np.nan):>8.1f} "
              f"{row['by_method'].get('ats', np.nan):>6.1f}  "
              f"{', '.join(reached) if len(reached) <= 4 else f'{len(reached)} methods'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="lin2024")
    parser.add_argument("--noise", type=float, default=0.02,
                        help="also the same under this noise level (0: curves as given only)")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows, skipped = ceiling_rows(args.suite, args.noise, args.seeds)
    for note in skipped:
        print(note)
    print_rows(args.suite, rows)


if __name__ == "__main__":
    main()
