"""Choosing the law per task from its own back-tests: does it transfer? (A null result.)

``search_ceiling.py`` shows that the right law, read at the right sizes, finds the best
candidate at 1 % of the FLOPs on every task -- but the right law differs by task
(rectified on FLAN, the pooled fit on WMT19).  The obvious rule needs no tuning: per
task and budget, back-test every law-extrapolating method on the curves seen (cut by
1 and 2 doublings, predicting the losses at the budget) and use the one that predicted
them best.  Three fixed criteria for "best" (lower is better, averaged over the two
back-tests): ``pear`` -- minus the PearCorr of the predicted and measured losses;
``rank`` -- minus their rank correlation; ``cmse`` -- the mean squared log error after
removing its median (a shift shared by every candidate does not change the order).

No setting is tuned (the methods and criteria are fixed here), so the in-sample and the
leave-one-task-out rows are the same; the robustness protocol's variants (model
subsets, noise, other targets) are where it is tested.  Printed per variant: mean
PearCorr and RelAcc of each law method and each rule, and the worst cell against AtS;
then, on the curves as given, which method each rule picked per task.

Usage: python benchmarks/backtest_law_choice.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from lensllm.core.benchmark import TARGET, TASKS, load_benchmark
from lensllm.core.curves import CurveSet
from lensllm.core.evaluation import pearcorr, relacc
from lensllm.core.robustness import (
    CellScore,
    RobustnessSettings,
    Variant,
    build_variants,
    summarise,
)
from lensllm.core.selectors import Selection
from tune_intervals import LAW_METHODS, served_selections

CRITERIA = ("pear", "rank", "cmse")
BACK_TESTS = (1, 2)  # doublings


def criterion(kind: str, predicted: np.ndarray, measured: np.ndarray) -> float:
    """How badly one back-test predicted the measured losses (lower is better)."""
    if kind == "pear":
        return -pearcorr(predicted, measured)
    if kind == "rank":
        return -pearcorr(np.argsort(np.argsort(predicted)), np.argsort(np.argsort(measured)))
    if kind == "cmse":
        error = np.log(predicted) - np.log(measured)
        return float(np.mean((error - np.median(error)) ** 2))
    raise ValueError(f"unknown criterion {kind!r}; one of {', '.join(CRITERIA)}")


def back_test_scores(method: str, cells: Sequence[tuple[CurveSet, int]]
                     ) -> dict[str, list[float]]:
    """Per criterion, ``method``'s mean back-test score in every (seen curves, budget)
    cell (NaN where a back-test cannot be served)."""
    requests, owners = [], []
    for i, (curves, budget) in enumerate(cells):
        seen = curves.within(budget)
        for h in BACK_TESTS:
            pseudo = budget // 2**h
            if min(int(np.sum(c.sizes <= pseudo)) for c in seen) >= 3:
                requests.append((seen, pseudo, budget))
                owners.append(i)
    per_cell: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (seen, _, budget), i, sel in zip(requests, owners, served_selections(method, requests),
                                         strict=True):
        measured = seen.losses_at(budget, "the back-test scores against it")
        for kind in CRITERIA:
            per_cell[i][kind].append(np.nan if sel is None
                                     else criterion(kind, sel.predicted, measured))
    return {kind: [float(np.mean(per_cell[i][kind])) if per_cell[i][kind] else np.nan
                   for i in range(len(cells))] for kind in CRITERIA}


def law_choice_cells(variants: Sequence[Variant], methods: Sequence[str] = LAW_METHODS
                     ) -> tuple[list[CellScore], dict[tuple[str, str, str], Counter]]:
    """CellScores of every method and every rule (``by <criterion>``) on every cell of
    the variants, and per (variant, task, criterion) how often each method was picked."""
    cells = [(variant.name, case, budget) for variant in variants for case in variant.cases
             for budget in case.budgets]
    requests = [(case.curves, budget, case.target) for _, case, budget in cells]
    chosen = {m: served_selections(m, requests) for m in methods}
    scores = {m: back_test_scores(m, [(case.curves, b) for _, case, b in cells])
              for m in methods}
    out, picks = [], defaultdict(Counter)

    def score(name: str, i: int, sel: Selection) -> CellScore:
        vname, case, budget = cells[i]
        index = sel.models.index(sel.chosen)
        return CellScore(vname, case.curves.task, case.seed, name, budget, case.target,
                         pearcorr(sel.scores, case.truth),
                         relacc(float(case.truth[index]), case.truth))

    for i, (vname, case, _) in enumerate(cells):
        for m in methods:
            if chosen[m][i] is not None:
                out.append(score(m, i, chosen[m][i]))
        for kind in CRITERIA:
            usable = {m: scores[m][kind][i] for m in methods
                      if chosen[m][i] is not None and np.isfinite(scores[m][kind][i])}
            if not usable:
                continue
            best = min(usable, key=usable.get)  # ties: the first in the fixed list
            out.append(score(f"by {kind}", i, chosen[best][i]))
            picks[(vname, case.curves.task, kind)][best] += 1
    return out, picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed per variant (default: the protocol's seeds)")
    args = parser.parse_args()
    start = time.perf_counter()
    settings = RobustnessSettings(subset_seeds=1, noise_seeds=1) if args.quick else None
    variants = build_variants([load_benchmark(t) for t in TASKS], TARGET, settings)
    cells, picks = law_choice_cells(variants)
    for summary in summarise(cells, "ats"):
        print(f"{summary.variant:16s} {summary.method:14s} PearCorr {summary.pearcorr:5.1f} "
              f"RelAcc {summary.relacc:5.1f} | worst vs AtS: RelAcc "
              f"{summary.worst_relacc:+6.1f} ({summary.worst_relacc_cell}), PearCorr "
              f"{summary.worst_pearcorr:+6.1f}")
    print("\npicked on the curves as given (cells per method):")
    for (vname, task, kind), counter in sorted(picks.items()):
        if vname == "in-sample":
            print(f"  {task:9s} by {kind}: " + ", ".join(f"{m} {n}"
                                                       for m, n in counter.most_common()))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
