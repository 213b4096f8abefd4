"""The documented rule for the pooled predictor's evidence prior, and its check.

The pooled predictor (lensllm.core.selectors.pooled) mixes the transition sub-model (T)
and AtS's power-phase line (P) with weight sigmoid(Δ - prior), Δ the pooled
log-evidence for (T).  ``prior`` shrinks the mix toward (P), i.e. toward AtS, when the
evidence is weak (few curves, noisy points).

Rule (fixed before looking at the evaluation tables; ``lensllm.core.tuning``): over
prior in {0, 1, 2, 3, 5, 8, 12, 20}, on the training tasks' cells of every variant of
the robustness protocol (in-sample; 10 and 20 models x 5 seeds; 1 % and 2 % noise x 3
seeds; targets 819,200 and 409,600), keep the value with the largest mean over
variants of (mean PearCorr + mean RelAcc) among those with no training cell more than
10 RelAcc points below AtS; if none qualifies, the value with the best worst cell.
Ties go to the smaller prior.
Printed: each value's per-variant means and worst cell, the in-sample choice, and
leave-one-task-out (chosen on two tasks, scored on the held-out one, every variant).

Usage: python benchmarks/tune_evidence_prior.py
"""

from __future__ import annotations

import time

from lensllm.core.benchmark import TARGET, TASKS, load_benchmark
from lensllm.core.robustness import build_variants
from lensllm.core.tuning import PRIORS, choose_prior, prior_cells, prior_scores


def main() -> None:
    start = time.perf_counter()
    rows = prior_cells(build_variants([load_benchmark(t) for t in TASKS], TARGET))
    for prior in PRIORS:
        s = prior_scores(rows, prior, TASKS)
        print(f"prior {prior:4g}: " + " | ".join(
            f"{v} {a:5.1f}/{b:5.1f} (AtS {c:5.1f}/{d:5.1f}, worst {e:+5.1f})"
            for v, (a, b, c, d, e) in s.items()))
    print(f"in-sample choice: evidence_prior = {choose_prior(rows, TASKS):g}")
    for held in TASKS:
        prior = choose_prior(rows, [t for t in TASKS if t != held])
        s = prior_scores(rows, prior, [held])
        print(f"leave-one-task-out {held:9s}: prior {prior:g} -> " + " | ".join(
            f"{v} {a:5.1f}/{b:5.1f} (AtS {c:5.1f}/{d:5.1f}, worst {e:+5.1f})"
            for v, (a, b, c, d, e) in s.items()))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
