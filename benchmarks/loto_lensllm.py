"""Leave-one-task-out for every tuned setting of ``lensllm``, together.

For each held-out task: the evidence prior is chosen by its rule
(``tune_evidence_prior.py``, on the robustness protocol's variants of the other two
tasks), then the recency scales by theirs (``tune_lensllm.py``, on the other two tasks'
protocol cells, with that prior); the held-out task's 7 in-sample cells are scored with
both and compared with AtS.  Printed: the choices, per-task means and the worst cell.

Usage: python benchmarks/loto_lensllm.py
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import tune_evidence_prior as prior_rule
import tune_lensllm as recency_rule
from lensllm.core.benchmark import TARGET, TASKS, load_benchmark, ratio_label


def main() -> None:
    rows = prior_rule.collect()
    curves = {t: load_benchmark(t) for t in TASKS}
    budgets = recency_rule.budgets_for(TARGET)
    ats = recency_rule.run("ats", curves, TARGET, budgets)
    means = []
    print(f"{'held out':9s} {'prior':>5s} {'recency':>7s} | {'PearCorr':>8s} {'AtS':>5s} | "
          f"{'RelAcc':>6s} {'AtS':>5s} | worst cell vs AtS (RelAcc)")
    for held in TASKS:
        train = [t for t in TASKS if t != held]
        prior = prior_rule.choose(rows, train)
        candidates = {name: replace(s, evidence_prior=prior)
                      for name, s in recency_rule.CANDIDATES.items()}
        results = {name: recency_rule.run(s, {t: curves[t] for t in train}, TARGET, budgets)
                   for name, s in candidates.items()}
        name = recency_rule.choose(results, train)
        cells = recency_rule.run(candidates[name], {held: curves[held]}, TARGET, budgets)
        p, r = np.mean(cells.pear[held]), np.mean(cells.rel[held])
        ap, ar = np.mean(ats.pear[held]), np.mean(ats.rel[held])
        diff = np.subtract(cells.rel[held], ats.rel[held])
        k = int(np.argmin(diff))
        means.append((p, r, ap, ar))
        print(f"{held:9s} {prior:5g} {name:>7s} | {p:8.1f} {ap:5.1f} | {r:6.1f} {ar:5.1f} | "
              f"{diff[k]:+.1f} ({ratio_label(budgets[k], TARGET)})")
    m = np.mean(means, 0)
    print(f"{'mean':9s} {'':5s} {'':7s} | {m[0]:8.1f} {m[2]:5.1f} | {m[1]:6.1f} {m[3]:5.1f} |")


if __name__ == "__main__":
    main()
