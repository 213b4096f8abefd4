"""Does the measured NTK help the default?  The rule for ``lensllm[ntk_prior=S]`` and the
decision whether it replaces ``lensllm``.

The variant (lensllm.core.selectors.ntkprior) puts a prior on each candidate's knee in
the pooled fit: log D0_i ~ N(c + s log F_i, 1 / S), c and s >= 0 fitted per task.

Rule (written before any zoo result was seen):

1. Grid, fixed in advance: S in 0, 1/16, 1/4, 1, 4, 16 (prior SD of a knee around the
   line: off, 4, 2, 1, 0.5, 0.25 natural-log units).  S = 0 is today's default.
   Objective differences under 0.01 points are ties (float noise, not an effect).
2. Tasks: lin2024's three and every task of the zoo suite that exists (a partial suite
   gives fewer).  Cells: each task's protocol budgets (target/8 ... target/512 on
   lin2024, target/8 ... target/64 on the zoo), the curves seen below the target.
3. Leave-one-task-out: for each held-out task, S maximises mean PearCorr + mean RelAcc
   over the other tasks' cells (ties to the smaller S, so the default wins a tie); the
   held-out task is scored at that S at every ratio, next to the default.
   lin2024 has no spectra: there every S gives the default's selections exactly (the
   script checks it), so its cells are ties that count in the means of both.
4. Robustness: S* = the rule's choice on all tasks.  The robustness protocol
   (lensllm.core.robustness, default settings as ``lensllm bench --robustness``) on the
   zoo suite, ``lensllm`` vs ``lensllm[ntk_prior=S*]``, reference ``lensllm``.  Its model
   subsets (10, 20 models) do not apply to a zoo of fewer candidates and are skipped by
   the protocol itself; lin2024 is left out (nothing changes there).
5. DECISION: the variant (at S*) becomes the default only if S* > 0, its held-out mean
   PearCorr and mean RelAcc over all held-out cells (both suites, every ratio) are each
   >= the default's, and on every variant of the robustness protocol its mean PearCorr
   and mean RelAcc are each >= the default's.  Otherwise: null result.

Also printed, as a diagnostic outside the rule: a placebo, the variant at the same S
with the spectra rotated among the candidates of each task (same prior, F unrelated to
the candidate), which separates what F adds from what shrinking the knees toward a
common line does.

    python benchmarks/tune_ntk_prior.py [--suite-dir DIR]   # default: the package's zoo
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Sequence

import numpy as np

from lensllm.core.benchmark import ratio_label
from lensllm.core.curves import CurveSet
from lensllm.core.robustness import (
    CellScore,
    RobustnessSettings,
    build_variants,
    robustness,
    rule_pear_plus_rel,
    score_cases,
)
from lensllm.core.selectors.ntkprior import log_ntk_terms
from lensllm.core.selectors.pooled import pooled_lensllm_predict
from lensllm.core.suites import load_suite

SCALES = (0.0, 1 / 16, 1 / 4, 1.0, 4.0, 16.0)
DEFAULT = 0.0
#: objective differences (points of mean PearCorr + mean RelAcc) below this are ties
TIE = 0.01


def spec(scale: float) -> str:
    return "lensllm" if scale == DEFAULT else f"lensllm[ntk_prior={scale:g}]"


def rotated(curves: CurveSet) -> CurveSet:
    """The placebo: each candidate gets the next candidate's spectrum."""
    spectra = [c.ntk for c in curves]
    spectra = spectra[1:] + spectra[:1]
    return CurveSet((dataclasses.replace(c, ntk=s) for c, s in zip(curves, spectra,
                                                                       strict=True)),
                    task=curves.task)


def in_sample_cells(suite_name: str, tasks: Sequence[CurveSet], target: int,
                    placebo: bool = False) -> dict[float, list[CellScore]]:
    """Every scale's cells on the suite's protocol (task names prefixed by the suite)."""
    only = RobustnessSettings(subset_sizes=(), noise_levels=(), targets=())
    [variant] = build_variants(tasks, target, only)
    cases = variant.cases
    if placebo:
        cases = tuple(dataclasses.replace(c, curves=rotated(c.curves)) for c in cases)
    out = {}
    for scale in SCALES:
        cells = score_cases(spec(scale), cases, "in-sample")
        out[scale] = [dataclasses.replace(c, task=f"{suite_name}/{c.task}") for c in cells]
    return out


def choose(cells: dict[float, list[CellScore]], tasks: set[str]) -> float:
    best, value = DEFAULT, -math.inf
    for scale in SCALES:
        v = rule_pear_plus_rel([c for c in cells[scale] if c.task in tasks])
        if v > value + TIE:
            best, value = scale, v
    return best


def mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite-dir", default="zoo",
                        help="the zoo suite folder (default: the package's zoo suite)")
    args = parser.parse_args()
    started = time.perf_counter()
    lin = load_suite("lin2024")
    zoo = load_suite(args.suite_dir)
    zoo_names = [t.task for t in zoo.curve_sets]
    print("# NTK prior on the pooled default: rule of benchmarks/tune_ntk_prior.py\n")
    print(f"zoo suite {args.suite_dir}: tasks {', '.join(zoo_names)}; target {zoo.target:,}")
    for t in zoo.curve_sets:
        log_f = log_ntk_terms(t)
        print(f"- {t.task}: {len(t)} candidates, {int(np.isfinite(log_f).sum())} with a "
              f"measured F; log F from {np.nanmin(log_f):.2f} to {np.nanmax(log_f):.2f}"
              if np.isfinite(log_f).any() else f"- {t.task}: {len(t)} candidates, no spectra")

    # Why the prior can or cannot act: it moves only the transition sub-model (T), whose
    # weight in the default's mix is the pooled evidence's posterior.
    only = RobustnessSettings(subset_sizes=(), noise_levels=(), targets=())
    [variant] = build_variants(zoo.curve_sets, zoo.target, only)
    for case in variant.cases:
        fits = pooled_lensllm_predict([(case.curves, b, case.target) for b in case.budgets])
        print(f"- {case.curves.task}: mean weight of the transition sub-model per ratio "
              + ", ".join(f"{ratio_label(f.budget, f.target)} {f.weight.mean():.3f}"
                          for f in fits))

    cells = in_sample_cells("lin2024", lin.curve_sets, lin.target)
    lin_same = all((a.pearcorr, a.relacc) == (b.pearcorr, b.relacc) or
                   (math.isnan(a.pearcorr) and math.isnan(b.pearcorr) and a.relacc == b.relacc)
                   for s in SCALES for a, b in zip(cells[DEFAULT], cells[s], strict=True))
    print(f"\nlin2024 (no spectra): every scale gives the default's cells exactly: {lin_same}")
    zoo_cells = in_sample_cells("zoo", zoo.curve_sets, zoo.target)
    placebo = in_sample_cells("zoo", zoo.curve_sets, zoo.target, placebo=True)
    for s in SCALES:
        cells[s] = cells[s] + zoo_cells[s]
    tasks = list(dict.fromkeys(c.task for c in cells[DEFAULT]))

    print("\n## In-sample, every scale (mean over each suite's cells)\n")
    print("| ntk_prior | lin2024 PearCorr | RelAcc | zoo PearCorr | RelAcc | zoo placebo "
          "PearCorr | RelAcc |")
    print("|---|---|---|---|---|---|---|")
    for s in SCALES:
        lc = [c for c in cells[s] if c.task.startswith("lin2024/")]
        zc = zoo_cells[s]
        print(f"| {s:g} | {fmt(mean([c.pearcorr for c in lc]))} | "
              f"{fmt(mean([c.relacc for c in lc]))} | {fmt(mean([c.pearcorr for c in zc]))} | "
              f"{fmt(mean([c.relacc for c in zc]))} | "
              f"{fmt(mean([c.pearcorr for c in placebo[s]]))} | "
              f"{fmt(mean([c.relacc for c in placebo[s]]))} |")

    print("\n## Leave-one-task-out (S chosen on the other tasks)\n")
    print("| held-out task | ratio | S | default PearCorr | variant PearCorr | default RelAcc "
          "| variant RelAcc | placebo PearCorr | placebo RelAcc |")
    print("|---|---|---|---|---|---|---|---|---|")
    held: list[tuple[CellScore, CellScore, CellScore | None, float]] = []
    for task in tasks:
        scale = choose(cells, set(tasks) - {task})
        mine = [c for c in cells[scale] if c.task == task]
        base = [c for c in cells[DEFAULT] if c.task == task]
        fake = {(c.task, c.budget): c for c in placebo[scale]}
        for d, v in zip(base, mine, strict=True):
            p = fake.get((d.task, d.budget))
            held.append((d, v, p, scale))
            print(f"| {task} | {ratio_label(d.budget, d.target)} | {scale:g} | "
                  f"{fmt(d.pearcorr)} | {fmt(v.pearcorr)} | {fmt(d.relacc)} | {fmt(v.relacc)} "
                  f"| {fmt(p.pearcorr) if p else '-'} | {fmt(p.relacc) if p else '-'} |")
    mp = [mean([h[i].pearcorr for h in held]) for i in (0, 1)]
    mr = [mean([h[i].relacc for h in held]) for i in (0, 1)]
    zoo_held = [h for h in held if h[0].task.startswith("zoo/")]
    print(f"\nmean over all {len(held)} held-out cells: PearCorr default {fmt(mp[0])}, "
          f"variant {fmt(mp[1])}; RelAcc default {fmt(mr[0])}, variant {fmt(mr[1])}")
    if zoo_held:
        print(f"mean over the {len(zoo_held)} zoo cells: PearCorr default "
              f"{fmt(mean([h[0].pearcorr for h in zoo_held]))}, variant "
              f"{fmt(mean([h[1].pearcorr for h in zoo_held]))}, placebo "
              f"{fmt(mean([h[2].pearcorr for h in zoo_held if h[2]]))}; RelAcc default "
              f"{fmt(mean([h[0].relacc for h in zoo_held]))}, variant "
              f"{fmt(mean([h[1].relacc for h in zoo_held]))}, placebo "
              f"{fmt(mean([h[2].relacc for h in zoo_held if h[2]]))}")
    dp = [(h[1].pearcorr - h[0].pearcorr, h) for h in held
          if math.isfinite(h[1].pearcorr) and math.isfinite(h[0].pearcorr)]
    dr = [(h[1].relacc - h[0].relacc, h) for h in held]
    for name, diffs in (("PearCorr", dp), ("RelAcc", dr)):
        if diffs:
            worst, h = min(diffs, key=lambda x: x[0])
            print(f"worst cell, variant - default {name}: {worst:+.1f} ({h[0].task} "
                  f"{ratio_label(h[0].budget, h[0].target)}, S {h[3]:g})")

    chosen = choose(cells, set(tasks))
    print(f"\nin-sample choice on all {len(tasks)} tasks: S* = {chosen:g}")
    robust_ok, worse = True, []
    scale = chosen
    if chosen == DEFAULT:
        # the variant is the default; show the protocol for the best non-zero scale
        scale = max(SCALES[1:], key=lambda s: rule_pear_plus_rel(cells[s]))
        print(f"S* = 0: the robustness protocol below is a diagnostic at S = {scale:g}")
    print(f"\n## Robustness protocol on the zoo suite: lensllm vs {spec(scale)}\n")
    report = robustness(zoo.curve_sets, zoo.target, ("lensllm", spec(scale)),
                        RobustnessSettings(), reference="lensllm")
    print("| variant | cells | default PearCorr | variant PearCorr | default RelAcc | "
          "variant RelAcc | worst cell PearCorr | worst cell RelAcc |")
    print("|---|---|---|---|---|---|---|---|")
    for s in report.summaries:
        if s.method == "lensllm":
            continue
        print(f"| {s.variant} | {s.cells} | {fmt(s.ref_pearcorr)} | {fmt(s.pearcorr)} | "
              f"{fmt(s.ref_relacc)} | {fmt(s.relacc)} | {s.worst_pearcorr:+.1f} "
              f"({s.worst_pearcorr_cell}) | {s.worst_relacc:+.1f} ({s.worst_relacc_cell}) |")
        dp_, dr_ = s.pearcorr - s.ref_pearcorr, s.relacc - s.ref_relacc
        if not ((dp_ >= 0 or math.isnan(s.ref_pearcorr)) and dr_ >= 0):
            robust_ok = False
            worse.append(f"{s.variant}: mean PearCorr {dp_:+.4f}, RelAcc {dr_:+.4f}")

    held_ok = mp[1] >= mp[0] and mr[1] >= mr[0]
    print(f"\n({time.perf_counter() - started:.0f} s)\n")
    if chosen > DEFAULT and held_ok and robust_ok:
        print(f"DECISION: the variant lensllm[ntk_prior={chosen:g}] matches or beats the default "
              f"held-out (PearCorr {fmt(mp[1])} vs {fmt(mp[0])}, RelAcc {fmt(mr[1])} vs "
              f"{fmt(mr[0])}) and is not worse on the robustness protocol's means: make "
              f"ntk_prior={chosen:g} the default")
    else:
        why = ("the rule chose S = 0 on all tasks" if chosen == DEFAULT else
               "held-out means below the default's" if not held_ok else
               "below the default's mean on robustness variant(s) "
               + "; ".join(worse))
        print(f"DECISION: null result ({why}; held-out PearCorr {mp[1]:.4f} vs "
              f"{mp[0]:.4f}, RelAcc {mr[1]:.4f} vs {mr[0]:.4f}): lensllm stays as it is")


if __name__ == "__main__":
    main()
