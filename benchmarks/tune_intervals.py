"""The documented rule for the interval exponent gamma, and its check.

Intervals are split-conformal over back-tests with a horizon-dependent scale
``H**gamma`` (lensllm.core.uncertainty).  Rule (``lensllm.core.tuning.choose_gamma``):
over gamma in 1.0, 1.05, ..., 2.0, keep the smallest value whose 90 % intervals cover
at least 75 % of the candidates in every training cell (task x ratio, protocol budgets
target/8 ... target/512); if none does, the value with the best worst cell.  Printed:
overall coverage for each gamma, coverage per cell for the in-sample choice, and
leave-one-task-out (chosen on two tasks, scored on the third) per cell and pooled.

``--alternatives`` also scores other calibrations of the same back-tests, each with
its settings chosen by one rule on the training tasks (both goals -- 85-95 % overall,
>= 75 % in every cell -- then the overall coverage nearest 90 %; else every cell >= 75 %
with the lowest overall; else the best worst cell), in-sample and leave-one-task-out:

* ``gamma``: the shipped scores ``|e| / h**gamma``, width ``q H**gamma``;
* ``gamma+start``: scores ``|e| / (h**gamma 2**(delta h))`` -- a back-test h doublings
  long also starts h doublings earlier, where the curves are harder to extrapolate;
* ``longest``: only the longest back-test, width ``q (H / h_max)**gamma``;
* ``gamma x m``: the shipped scores with the width times m (a level correction);
* ``fitted growth``: each cell's own growth exponent g, the slope of log q(h) on log h
  (q(h): the 90 % conformal quantile of the back-tests h doublings long), at least
  ``floor``; width ``q(h_max) (H / h_max)**g`` -- the growth measured per task instead
  of one gamma for all;
* ``method spread``: no back-tests -- the disagreement of the law fits themselves: per
  candidate, the range ``s`` of the log losses predicted at the target by every
  registered method that extrapolates a fitted law (vanilla, rectified, ats, lensllm,
  lensllm-paper; one that cannot serve a cell is left out there), width
  ``a s (H / 3)**b`` (3: the horizon of the largest protocol budget, target/8).

Usage: python benchmarks/tune_intervals.py [--method lensllm] [--suite lin2024]
       [--alternatives]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

import numpy as np

from lensllm.core.benchmark import ratio_label
from lensllm.core.curves import CurveSet
from lensllm.core.selectors import Selection, make_selector
from lensllm.core.suites import load_suite
from lensllm.core.tuning import GAMMAS, choose_gamma, coverage_table
from lensllm.core.uncertainty import conformal_models, conformal_quantile
from lensllm.errors import InputError


def back_test_errors(tasks: Sequence[CurveSet], target: int, budgets: Sequence[int],
                     method: str) -> list[dict]:
    """Per cell: the log errors at the target and of each back-test, by its length."""
    selector = make_selector(method)
    full = {t.task: t for t in tasks}
    requests = [(t, b, target) for t in tasks for b in budgets]
    cells = [{"task": t.task, "budget": b, "H": math.log2(target / b), "bt": {}}
             for t, b, _ in requests]
    for cell, request in zip(cells, requests, strict=True):
        def predictor(reqs, cell=cell):
            out = [s.predicted for s in selector.select_many(reqs)]
            for (cut, budget, pseudo), pred in zip(reqs, out, strict=True):
                truth = full[cut.task].subset(cut.models).losses_at(pseudo, "")
                cell["bt"][round(math.log2(pseudo / budget))] = np.log(pred) - np.log(truth)
            return out
        conformal_models(predictor, [request], max(selector.required_sizes, 2))
    for cell, (task, _, _), sel in zip(cells, requests, selector.select_many(requests),
                                       strict=True):
        cell["e"] = np.log(sel.predicted) - np.log(task.losses_at(target, ""))
    for cell, spread in zip(cells, law_spreads(requests), strict=True):
        cell["spread"] = spread
    return cells


#: the registered methods that extrapolate a fitted law (the ``method spread`` family)
LAW_METHODS = ("vanilla", "rectified", "ats", "lensllm", "lensllm-paper")


def served_selections(method: str, requests: Sequence[tuple[CurveSet, int, int]]
                      ) -> list[Selection | None]:
    """``method`` on every request in one batch; None where it cannot serve one."""
    selector = make_selector(method)
    try:
        return list(selector.select_many(list(requests)))
    except InputError:
        out: list[Selection | None] = []
        for request in requests:
            try:
                out.append(selector.select(*request))
            except InputError:
                out.append(None)
        return out


def law_spreads(requests: Sequence[tuple[CurveSet, int, int]]) -> list[np.ndarray]:
    """Per request and candidate: max - min of the log losses the law methods predict
    at the target (the methods that cannot serve a request are left out of it)."""
    served = [served_selections(m, requests) for m in LAW_METHODS]
    out = []
    for i, (curves, _, _) in enumerate(requests):
        predictions = [np.log(s[i].predicted) for s in served if s[i] is not None]
        if len(predictions) < 2:
            out.append(np.full(len(curves), np.nan))
            continue
        stacked = np.array(predictions)
        out.append(stacked.max(axis=0) - stacked.min(axis=0))
    return out


def _width(kind: str, cell: dict, a: float, b: float) -> float | np.ndarray:
    if kind == "method spread":
        return a * cell["spread"] * (cell["H"] / 3) ** b
    hs = sorted(cell["bt"])
    if not hs:
        return math.nan
    if kind == "longest":
        longest = np.abs(cell["bt"][hs[-1]])
        return b * conformal_quantile(longest, 0.9) * (cell["H"] / hs[-1]) ** a
    if kind == "fitted growth":
        if len(hs) < 2:
            return math.nan
        q = np.array([conformal_quantile(np.abs(cell["bt"][h]), 0.9) for h in hs])
        growth = max(a, float(np.polyfit(np.log(hs), np.log(q), 1)[0]))
        return b * q[-1] * (cell["H"] / hs[-1]) ** growth
    delta, mult = (b, 1.0) if kind == "gamma+start" else (0.0, b)
    scores = np.concatenate([np.abs(cell["bt"][h]) / (h**a * 2 ** (delta * h)) for h in hs])
    return mult * conformal_quantile(scores, 0.9) * cell["H"] ** a


FAMILIES: dict[str, tuple[Sequence[float], Sequence[float]]] = {
    "gamma": (GAMMAS, (1.0,)),
    "gamma+start": (tuple(round(0.5 + 0.1 * k, 1) for k in range(26)),
                    tuple(round(0.1 * k, 1) for k in range(16))),
    "longest": (tuple(round(0.5 + 0.1 * k, 1) for k in range(26)), (1.0,)),
    "gamma x m": (tuple(round(0.5 + 0.1 * k, 1) for k in range(26)),
                  tuple(round(0.5 + 0.05 * k, 2) for k in range(31))),
    "fitted growth": (tuple(round(0.1 * k, 1) for k in range(31)), (1.0,)),
    "method spread": (tuple(round(0.05 * k, 2) for k in range(1, 81)),
                      tuple(round(0.1 * k, 1) for k in range(26))),
}


def _choose(table: dict, cells: list[dict], train: Sequence[str]) -> tuple:
    mask = np.array([c["task"] in train for c in cells])

    def key(p: tuple) -> tuple:
        cov = table[p][mask]
        mean, worst = float(np.mean(cov)), float(np.min(cov))
        if worst >= 75 and 85 <= mean <= 95:
            return (2, -abs(mean - 90))
        return (1, -mean) if worst >= 75 else (0, worst)
    return max(table, key=key)


def alternatives(cells: list[dict], out: Callable[[str], None] = print) -> None:
    tasks = list(dict.fromkeys(c["task"] for c in cells))
    task_of = np.array([c["task"] for c in cells])
    for kind, (first, second) in FAMILIES.items():
        table = {(a, b): np.array([100.0 * np.mean(np.abs(c["e"]) <= _width(kind, c, a, b))
                                   for c in cells]) for a in first for b in second}
        p = _choose(table, cells, tasks)
        cov = table[p]
        out(f"{kind:11s} in-sample {p}: overall {cov.mean():5.1f}, worst cell "
            f"{cov.min():5.1f}; per cell " + " ".join(f"{v:.0f}" for v in cov))
        held = np.empty(len(cells))
        for t in tasks:
            q = _choose(table, cells, [u for u in tasks if u != t])
            held[task_of == t] = table[q][task_of == t]
            out(f"{'':11s} without {t:9s} {q}: " + " ".join(
                f"{v:.0f}" for v in table[q][task_of == t]))
        out(f"{'':11s} held out: overall {held.mean():5.1f}, worst cell {held.min():5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lensllm")
    parser.add_argument("--suite", default="lin2024")
    parser.add_argument("--alternatives", action="store_true",
                        help="also score the other calibrations (module docstring)")
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
    if args.alternatives:
        print("\nalternatives (settings in brackets; per cell in task x budget order):")
        alternatives(back_test_errors(suite.curve_sets, target, budgets, args.method))


if __name__ == "__main__":
    main()
