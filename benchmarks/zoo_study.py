"""The study of the zoo suite (issue 10, item 5): does the NTK's F track the curves, how
do the methods select at every ratio, and what does the paper's Hessian view measure.

Prints markdown tables, one section per question, for whatever tasks the suite folder
holds (a partial build works):

1. **F against the curves.**  Per task and pooled over tasks: Spearman's ρ between the
   measured F (mode ``measured``: the paper's η and the measured t; mode ``fit-t``: t
   fitted to the full curve) and the rectified law's D_l fitted to the full curve (zero
   shot and every size, the target's included), and between F and the curve's knee
   (:func:`lensllm.core.diagnostics.knee_size`: the first size whose local log-log
   slope is at least half the curve's steepest, over the sizes > 0).  How many fits
   stopped at a bound of the fitting box, per law.
2. **Selection** at the suite's ratios with the protocol ``lensllm bench --suite``
   runs (:func:`lensllm.core.evaluation.evaluate`) and the interval coverage ``bench
   --calibration`` reports (:func:`lensllm.core.evaluation.calibration`): PearCorr,
   RelAcc, MAPE and 90 % coverage per task x ratio, their means and worst cells.
3. **The Hessian view** (Ju et al. 2022), from ``<task>.runs.json``: (a) the trace at
   the fine-tuned weights against the size (per candidate, total and per layer), and
   before against after the knee, with the pretrained trace; (b) the bound's
   complexity term against the measured train/test gap across sizes; (c) candidates
   ranked by the pretrained trace and by the complexity term at the budget, scored
   like the methods of section 2.

Usage: python benchmarks/zoo_study.py [SUITE_DIR] [--tasks a,b] [--skip-selection]
(SUITE_DIR: a folder as ``lensllm suite build`` exports it; default: the package's
zoo suite.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensllm.core.benchmark import ratio_label
from lensllm.core.curves import Curve, CurveSet
from lensllm.core.diagnostics import (
    Correlation,
    complexity_term,
    hessian_distance_measure,
    knee_size,
    negative_layers,
    spearman,
)
from lensllm.core.evaluation import calibration, evaluate, score_selection, usable_methods
from lensllm.core.laws import LensLLMLaw
from lensllm.core.laws.fit import params_at_bounds
from lensllm.core.selectors import Selection
from lensllm.core.selectors.lawfit import LensLLMPaperFit, RectifiedFit
from lensllm.core.suites import Suite, load_suite
from lensllm.errors import InputError, LensLLMError
from lensllm.report.tables import markdown_table

METHODS = ("lensllm-paper", "lensllm-paper[mode=fit-t]", "rectified", "lensllm", "ats",
           "zeroshot", "model-size", "subset-loss", "nlpmetrics")
LEVEL = 0.9


def corr(c: Correlation, n: int | None = None) -> str:
    """ρ (p) -- plus the pairs used when they differ from the row's n."""
    text = "n/a" if math.isnan(c.rho) else f"{c.rho:+.2f} (p {c.p:.2g})"
    return text if n is not None and c.n == n else f"{text} [n {c.n}]"


def num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


# ------------------------------------------------------------- 1. F and the curves

@dataclass
class CurveShape:
    task: str
    model: str
    f_measured: float | None = None
    f_fit: float | None = None
    t_measured: float | None = None
    t_fit: float | None = None
    d_l: float | None = None
    d0: float | None = None
    knee: float | None = None
    bounds: dict[str, tuple[str, ...]] = field(default_factory=dict)


def curve_shape(task: str, curve: Curve, target: int, notes: list[str]) -> CurveShape:
    """Fits to the full curve and the knee of one candidate; a fit that cannot be made
    leaves its numbers empty and says why in ``notes``."""
    shape = CurveShape(task, curve.model)

    def attempt(what: str, make):
        try:
            return make()
        except LensLLMError as error:
            notes.append(f"{task}: {curve.model}: {what}: {error}")
            return None

    rect = attempt("rectified fit", lambda: RectifiedFit().fit_curve(curve, target)[1])
    if rect is not None:
        shape.d_l, shape.d0 = rect.params["D_l"], rect.params["D0"]
        shape.bounds["rectified"] = params_at_bounds(rect)
    shape.knee = attempt("knee", lambda: knee_size(curve.sizes, curve.losses))
    if curve.ntk is None:
        notes.append(f"{task}: {curve.model}: no NTK spectrum in the curve file")
        return shape
    shape.t_measured = curve.ntk.steps
    if curve.ntk.steps is not None:
        shape.f_measured = LensLLMLaw(ntk=curve.ntk, mode="measured").f_value()
        measured = attempt("LensLLM fit (measured)", lambda: LensLLMPaperFit(
            mode="measured").fit_curve(curve, target)[1])
        if measured is not None:
            shape.bounds["measured"] = params_at_bounds(measured)
    fitted = attempt("LensLLM fit (fit-t)", lambda: LensLLMPaperFit(
        mode="fit-t").fit_curve(curve, target)[1])
    if fitted is not None:
        shape.f_fit, shape.t_fit = fitted.params["F"], fitted.params["t"]
        shape.bounds["fit-t"] = params_at_bounds(fitted)
    return shape


def section_ntk(suite: Suite, notes: list[str]
                ) -> tuple[str, dict[str, dict[str, float | None]]]:
    shapes = [curve_shape(cs.task, curve, suite.target, notes)
              for cs in suite.curve_sets for curve in cs]
    out = ["## 1. Does the measured F track the curves?", "",
           "Spearman ρ (two-sided p) over the candidates of a task; `pooled` ranks all "
           "(task, candidate) pairs together.  D_l: the rectified law fitted to the full "
           "curve (zero shot and every size, the target's included).  F(η, t): the "
           "paper's F at the candidate's learning rate and measured steps t; F(fit-t): "
           "F at the t fitted to the full curve.  Knee: the first measured size whose "
           "local log-log slope (least squares over the 3 sizes centred on it) is at "
           "least half the curve's steepest local slope; none when no local slope "
           "falls.  Bounds: fits with a parameter on a bound of the fitting box.  F(fit-t) "
           "is fitted to the same curve as D_l: agreement there says the spectrum can "
           "reach the rectified law's D_l, not that it predicts it; F(η, t) is the "
           "prediction.", ""]
    groups = [(cs.task, [s for s in shapes if s.task == cs.task]) for cs in suite.curve_sets]
    for task, members in groups:
        steps = {s.t_measured for s in members if s.t_measured is not None}
        if len(steps) == 1 and len(members) > 1:
            notes.append(f"{task}: the measured t is {steps.pop():g} steps for every "
                         "candidate (the run at the smallest size): F(η, t) differs between "
                         "candidates only by the spectrum and η")
    if len(groups) > 1:
        groups.append(("pooled", shapes))
    rows = []
    for name, members in groups:
        n = len(members)
        fm = [s.f_measured for s in members]
        ff = [s.f_fit for s in members]
        dl = [s.d_l for s in members]
        kn = [s.knee for s in members]
        hits = " / ".join(f"{sum(bool(s.bounds.get(law)) for s in members)} of "
                          f"{sum(law in s.bounds for s in members)}"
                          for law in ("rectified", "measured", "fit-t"))
        rows.append([name, n, corr(spearman(fm, dl), n), corr(spearman(ff, dl), n),
                     corr(spearman(fm, kn), n), corr(spearman(ff, kn), n),
                     corr(spearman(dl, kn), n), hits])
    out.append(markdown_table(
        ["task", "n", "F(η,t) vs D_l", "F(fit-t) vs D_l", "F(η,t) vs knee",
         "F(fit-t) vs knee", "D_l vs knee", "at bounds: rect / meas / fit-t"], rows))
    detail = [[s.task, s.model, num(s.f_measured), num(s.t_measured), num(s.f_fit),
               num(s.t_fit), num(s.d_l), num(s.d0), num(s.knee),
               "; ".join(f"{law}: {','.join(p)}" for law, p in s.bounds.items() if p) or "-"]
              for s in shapes]
    out += ["", "Per candidate:", "", markdown_table(
        ["task", "model", "F(η,t)", "t", "F(fit-t)", "t fitted", "D_l", "D0", "knee",
         "parameters at bounds"], detail)]
    knees = {s.task: {} for s in shapes}
    for s in shapes:
        knees[s.task][s.model] = s.knee
    return "\n".join(out), knees


# ------------------------------------------------------------------ 2. selection

def _cell_table(title: str, methods: Sequence[str], rows: dict[tuple[str, str], dict],
                digits: int = 1) -> str:
    body = [[task, ratio, *[rows[(task, ratio)].get(m) for m in methods]]
            for task, ratio in rows]
    return f"{title}\n\n" + markdown_table(["task", "ratio", *methods], body, digits)


def with_target(suite: Suite, notes: list[str]) -> list[CurveSet]:
    """Each task's curves that have the true loss at the target (the others cannot be
    scored: their verification run is missing); tasks left with one model drop out."""
    out = []
    for cs in suite.curve_sets:
        have = [c.model for c in cs if c.loss_at(suite.target) is not None]
        if len(have) < len(cs):
            notes.append(f"{cs.task}: no loss at the target {suite.target:,} for "
                         f"{', '.join(m for m in cs.models if m not in have)}: left out of "
                         "the selection scores")
        if len(have) >= 2:
            out.append(cs.subset(have) if len(have) < len(cs) else cs)
    return out


def section_selection(suite: Suite, curve_sets: list[CurveSet]) -> str:
    """Section 2 on ``curve_sets``: the suite's tasks as :func:`with_target` kept them."""
    budgets, target = list(suite.budgets), suite.target
    if not curve_sets:
        raise InputError("no task has two models with a loss at the target")
    kept, skipped = usable_methods(curve_sets, METHODS, budgets)
    # Needs that usable_methods does not check (nlpmetrics' weight metrics) show when the
    # method runs: try each at the smallest budget and leave out those that cannot.
    for selector in list(kept):
        try:
            selector.select_many([(cs, min(budgets), target) for cs in curve_sets])
        except InputError as error:
            kept.remove(selector)
            skipped.append(f"skipped {selector.label}: {error}")
    evaluation = evaluate(curve_sets, methods=kept, budgets=budgets, target=target)
    methods = evaluation.methods
    coverage: dict[tuple[str, str, int], float] = {}
    for selector in kept:
        if not selector.predicts_loss:
            continue
        for cell in calibration(curve_sets, selector, budgets, target, level=LEVEL):
            coverage[(cell.task, cell.method, cell.budget)] = cell.coverage
    keys = [(cs.task, b) for cs in curve_sets for b in budgets]
    out = ["## 2. Selection at every ratio", "",
           f"Target {target:,}; budgets {', '.join(f'{b:,}' for b in budgets)} "
           f"({', '.join(ratio_label(b, target) for b in budgets)}).  PearCorr and RelAcc "
           "x100, MAPE % of the predicted target loss, coverage x100 of the "
           f"{100 * LEVEL:.0f} % interval (n/a: the method predicts no loss; no back-test: "
           "too few sizes under the budget; the summary averages the cells that have "
           "one).  The same "
           "functions as `lensllm bench --suite` and `bench --calibration`.", ""]
    out += [f"- {note}" for note in skipped]
    for metric, label, digits in (("pearcorr", "PearCorr x100", 1),
                                  ("relacc", "RelAcc x100", 1), ("mape", "MAPE %", 2),
                                  ("coverage", f"coverage of the {100 * LEVEL:.0f} % "
                                               "interval x100", 1)):
        rows: dict[tuple[str, str], dict] = {}
        for task, budget in keys:
            row = rows.setdefault((task, ratio_label(budget, target)), {})
            for method in methods:
                if metric == "coverage":
                    value = coverage.get((task, method, budget), "n/a")
                    # None / NaN: too few sizes under the budget to back-test an interval
                    row[method] = "no back-test" if value is None or (
                        isinstance(value, float) and math.isnan(value)) else value
                else:
                    row[method] = getattr(evaluation.get(task, method, budget), metric)
                    if row[method] is None:
                        row[method] = "n/a"
        out += ["", _cell_table(f"**{label}**", methods, rows, digits)]
    summary = []
    for method in methods:
        cells = [c for c in evaluation.cells if c.method == method]
        worst = min((c for c in cells if math.isfinite(c.relacc)), key=lambda c: c.relacc,
                    default=None)
        mapes = [c.mape for c in cells if c.mape is not None]
        covs = [coverage[(c.task, method, c.budget)] for c in cells
                if coverage.get((c.task, method, c.budget)) is not None
                and math.isfinite(coverage[(c.task, method, c.budget)])]
        summary.append([
            method, len(cells), evaluation.mean(method, "pearcorr"),
            evaluation.mean(method, "relacc"),
            "-" if worst is None else f"{worst.relacc:.1f} ({worst.task} {worst.ratio})",
            float(np.mean(mapes)) if mapes else "n/a",
            float(np.max(mapes)) if mapes else "n/a",
            float(np.mean(covs)) if covs else "n/a",
            float(np.min(covs)) if covs else "n/a"])
    out += ["", "**Summary over task x ratio cells**", "", markdown_table(
        ["method", "cells", "PearCorr", "RelAcc", "worst RelAcc (cell)", "MAPE %",
         "worst MAPE %", "coverage", "worst coverage"], summary)]
    return "\n".join(out)


# ---------------------------------------------------------------- 3. the Hessian

@dataclass
class Run:
    size: int
    test_loss: float | None
    hessian: dict[str, Any]


def read_runs(folder: Path, task: str, notes: list[str]) -> tuple[dict[str, list[Run]],
                                                                 dict[str, dict[str, Any]]]:
    """Per model the fine-tuning runs (size > 0) that carry a Hessian measurement, and
    the pretrained measurements; what is missing or odd goes to ``notes``."""
    path = folder / f"{task}.runs.json"
    if not path.is_file():
        notes.append(f"{task}: no {path.name}")
        return {}, {}
    data = json.loads(path.read_text("utf-8"))
    runs: dict[str, list[Run]] = {}
    missing: list[str] = []
    _step_cap_note(task, data.get("runs") or {}, notes)
    for model, per_size in (data.get("runs") or {}).items():
        for size_text, entry in sorted(per_size.items(), key=lambda kv: int(kv[0])):
            size = int(size_text)
            if size == 0:
                continue  # the zero-shot evaluation: nothing fine-tuned to measure
            hessian = entry.get("hessian")
            if not hessian:
                missing.append(f"{model}@{size}")
                continue
            bad = [k for k in ("total_trace", "gap", "train_loss")
                   if not isinstance(hessian.get(k), int | float)
                   or not math.isfinite(hessian[k])]
            if not hessian.get("distance"):
                bad.append("distance")
            if bad:
                notes.append(f"{task}: {model}@{size}: Hessian fields missing or not finite: "
                             f"{', '.join(bad)}")
            runs.setdefault(model, []).append(Run(size, entry.get("test_loss"), hessian))
    if missing:
        notes.append(f"{task}: {len(missing)} fine-tuning run(s) without a Hessian "
                     f"measurement: {', '.join(missing[:8])}"
                     + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    negatives = [(m, r.size, negative_layers(r.hessian["distance"]))
                 for m, rs in runs.items() for r in rs if r.hessian.get("distance")]
    negatives = [x for x in negatives if x[2]]
    if negatives:
        notes.append(f"{task}: {len(negatives)} run(s) with a negative layer distance "
                     "(counted as zero in the complexity term): "
                     + ", ".join(f"{m}@{s} ({k} layer(s))" for m, s, k in negatives[:8]))
    pretrained = data.get("hessian_pretrained") or {}
    if not pretrained:
        notes.append(f"{task}: no pretrained Hessian measurements")
    return runs, pretrained


def _step_cap_note(task: str, runs: dict[str, dict[str, Any]], notes: list[str]) -> None:
    """Say so when several sizes of a candidate train for the same, largest number of
    steps: a step cap, so those sizes differ in data seen at equal compute."""
    capped = {}
    for model, per_size in runs.items():
        steps = {int(n): e.get("steps") for n, e in per_size.items()
                 if int(n) > 0 and isinstance(e.get("steps"), int | float)}
        if not steps:
            continue
        top = max(steps.values())
        at_top = sorted(n for n, v in steps.items() if v == top)
        if len(at_top) > 1:
            capped[model] = (at_top[0], top)
    if capped:
        firsts = sorted({v for v in capped.values()})
        notes.append(f"{task}: {len(capped)} of {len(runs)} candidates train for the same "
                     "largest step count at several sizes (a step cap): "
                     + "; ".join(f"sizes >= {n:,} all take {int(t)} steps" for n, t in firsts)
                     + "; the losses there compare data at equal steps")


def _complexity(run: Run, form: str) -> float | None:
    distance = run.hessian.get("distance")
    return complexity_term(distance, run.size, form) if distance else None


def _measure(run: Run) -> float | None:
    distance = run.hessian.get("distance")
    return hessian_distance_measure(distance) if distance else None


#: what 3b correlates with the gap, from one run
GAP_TERMS = {"sum-sqrt": lambda r: _complexity(r, "sum-sqrt"),
             "ju2022": lambda r: _complexity(r, "ju2022"),
             "S": _measure,
             "n^-1/2": lambda r: 1.0 / math.sqrt(r.size)}


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def section_hessian(suite: Suite, scorable: list[CurveSet],
                    knees: dict[str, dict[str, float | None]], notes: list[str]) -> str:
    """Section 3; ``scorable``: the tasks as :func:`with_target` kept them (3c)."""
    folder = suite.folder
    assert folder is not None
    data = {cs.task: read_runs(folder, cs.task, notes) for cs in suite.curve_sets}
    out = ["## 3. The Hessian view (Ju et al. 2022)", "",
           "From `<task>.runs.json`: traces (Hutchinson) at the fine-tuned weights of every "
           "run and at the pretrained weights, layer-wise Hessian-weighted distances "
           "d_l = δ_lᵀH_lδ_l from the pretrained weights, and the gap test - train loss. "
           "Complexity term: S / sqrt(n) with S = Σ_l sqrt(max(d_l, 0)) "
           "(`sum-sqrt`), and sqrt(S / n), the shape of the term in Ju et al.'s theorem "
           "(`ju2022`).  Every run with a Hessian is used, the target's included.", ""]
    # (a) trace against size, before/after the knee
    rows, layer_rho, all_rho = [], {}, []
    for cs in suite.curve_sets:
        runs, pretrained = data[cs.task]
        for model in cs.models:
            mine = runs.get(model, [])
            sizes = [r.size for r in mine]
            traces = [r.hessian.get("total_trace") for r in mine]
            c = spearman(sizes, traces)
            all_rho.append(c)
            knee = knees[cs.task].get(model)
            before = _mean([t for s, t in zip(sizes, traces, strict=True)
                            if knee is not None and s < knee])
            after = _mean([t for s, t in zip(sizes, traces, strict=True)
                           if knee is not None and s >= knee])
            pre = (pretrained.get(model) or {}).get("total_trace")
            rows.append([cs.task, model, num(pre), len(mine), corr(c, len(mine)), num(knee),
                         num(before), num(after),
                         num(after / before if before and after is not None else None)])
            for layer in {k for r in mine for k in (r.hessian.get("trace") or {})}:
                pairs = [(r.size, r.hessian["trace"][layer]) for r in mine
                         if layer in (r.hessian.get("trace") or {})]
                rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
                layer_rho.setdefault((cs.task, layer), []).append(rho)
    falling = [c for c in all_rho if not math.isnan(c.rho)]
    out += ["### 3a. Does the trace fall as the curve enters its power phase?", "",
            markdown_table(["task", "model", "pretrained trace", "runs", "ρ(trace, size)",
                            "knee", "mean trace < knee", "mean trace >= knee",
                            "after / before"], rows), "",
            f"Candidates with ρ < 0: {sum(c.rho < 0 for c in falling)} of {len(falling)} "
            f"(p < 0.05: {sum(c.rho < 0 and c.p < 0.05 for c in falling)}); with ρ > 0: "
            f"{sum(c.rho > 0 for c in falling)} (p < 0.05: "
            f"{sum(c.rho > 0 and c.p < 0.05 for c in falling)}).", "",
            "Per layer (ρ of the layer's trace against size, over the candidates that "
            "have the layer):", ""]
    layer_rows = []
    order = {cs.task: i for i, cs in enumerate(suite.curve_sets)}
    for (task, layer), cs_ in sorted(layer_rho.items(),
                                     key=lambda kv: (order[kv[0][0]], _layer_key(kv[0][1]))):
        finite = [c.rho for c in cs_ if not math.isnan(c.rho)]
        layer_rows.append([task, layer, len(finite),
                           num(float(np.median(finite)) if finite else None, 2),
                           sum(r < 0 for r in finite)])
    out.append(markdown_table(["task", "layer", "candidates", "median ρ", "ρ < 0"],
                              layer_rows))
    out += ["", "### 3b. Does the complexity term track the measured gap across sizes?", "",
            "ρ across each candidate's runs between the gap and: the complexity term in "
            "both forms, the distance measure S alone (the Hessian part), and n^-1/2 "
            "alone (the sample size part: what a term would get from n without any "
            "Hessian).", ""]
    rows, summary = [], []
    for cs in suite.curve_sets:
        runs, _ = data[cs.task]
        per_task: dict[str, list[Correlation]] = {term: [] for term in GAP_TERMS}
        pooled: dict[str, tuple[list, list]] = {term: ([], []) for term in GAP_TERMS}
        for model in cs.models:
            mine = runs.get(model, [])
            gaps = [r.hessian.get("gap") for r in mine]
            cells = []
            for term, value in GAP_TERMS.items():
                values = [value(r) for r in mine]
                c = spearman(values, gaps)
                per_task[term].append(c)
                pooled[term][0].extend(values)
                pooled[term][1].extend(gaps)
                cells.append(corr(c, len(mine)))
            rows.append([cs.task, model, len(mine), *cells])
        for term in GAP_TERMS:
            finite = [c.rho for c in per_task[term] if not math.isnan(c.rho)]
            summary.append([cs.task, term, num(float(np.median(finite)) if finite else None, 2),
                            f"{sum(r > 0 for r in finite)} / {len(finite)}",
                            corr(spearman(*pooled[term]))])
    out += [markdown_table(["task", "model", "runs", *(f"ρ({t}, gap)" for t in GAP_TERMS)],
                           rows), "", "Per task (median of the candidates' ρ, how many are "
            "positive, and ρ over all the task's runs pooled):", "",
            markdown_table(["task", "term", "median ρ", "ρ > 0", "pooled ρ"], summary)]
    out += ["", "### 3c. Does it help selection?", "",
            "Scores (lower ranks first): the pretrained total trace (the same at every "
            "ratio) and the `sum-sqrt` complexity term of the largest run at or under the "
            "budget; PearCorr and RelAcc x100 against the true target loss, as in "
            "section 2.  Candidates without the measurement are left out of that cell "
            "(n).", ""]
    out.append(_hessian_selection(suite, scorable, data))
    return "\n".join(out)


def _layer_key(layer: str) -> tuple[int, str]:
    tail = layer.rsplit(".", 1)[-1]
    return (int(tail), layer) if tail.isdigit() else (10**9, layer)


def _score_subset(curves: CurveSet, label: str, budget: int, target: int,
                  scores: dict[str, float | None]) -> tuple[float, float, int]:
    models = [m for m in curves.models if scores.get(m) is not None
              and math.isfinite(scores[m])]
    if len(models) < 2:
        return math.nan, math.nan, len(models)
    subset = curves.subset(models)
    truth = subset.losses_at(target, "the Hessian rankings need the true target loss")
    selection = Selection(method=label, task=curves.task, budget=budget, target=target,
                          models=models, scores=np.array([scores[m] for m in models]))
    cell = score_selection(selection, truth)
    return cell.pearcorr, cell.relacc, len(models)


def _hessian_selection(suite: Suite, scorable: list[CurveSet], data: dict[str, Any]) -> str:
    rows, totals = [], {"trace": ([], []), "complexity": ([], [])}
    for cs in scorable:
        runs, pretrained = data[cs.task]
        trace = {m: (pretrained.get(m) or {}).get("total_trace") for m in cs.models}
        for budget in suite.budgets:
            complexity = {}
            for model in cs.models:
                seen = [r for r in runs.get(model, []) if r.size <= budget
                        and r.hessian.get("distance")]
                complexity[model] = _complexity(seen[-1], "sum-sqrt") if seen else None
            row = [cs.task, ratio_label(budget, suite.target)]
            for key, scores in (("trace", trace), ("complexity", complexity)):
                p, r, n = _score_subset(cs, key, budget, suite.target, scores)
                totals[key][0].append(p)
                totals[key][1].append(r)
                row += [p, r, n]
            rows.append(row)
    for label, reduce in (("mean", np.nanmean), ("worst", np.nanmin)):
        row = [label, ""]
        for key in ("trace", "complexity"):
            for values in totals[key]:
                finite = [v for v in values if math.isfinite(v)]
                row.append(float(reduce(finite)) if finite else None)
            row.append("")
        rows.append(row)
    return markdown_table(["task", "ratio", "trace PearCorr", "trace RelAcc", "n",
                           "complexity PearCorr", "complexity RelAcc", "n"], rows)


# ------------------------------------------------------------------------- main

def study(name: str, tasks: Sequence[str] | None = None, selection: bool = True) -> str:
    """The whole study of suite ``name`` (``zoo`` or a folder) as markdown."""
    suite = load_suite(name, tasks)
    folder = suite.folder
    if folder is None:
        raise InputError(f"suite {name!r} has no runs to study; give a suite folder")
    counts = ", ".join(f"{cs.task} ({len(cs)})" for cs in suite.curve_sets)
    head = (f"# Zoo study: {folder}\n\nTasks (candidates): {counts}; target "
            f"{suite.target:,}.")
    notes: list[str] = []
    scorable = with_target(suite, notes)
    knees: dict[str, dict[str, float | None]] = {cs.task: {} for cs in suite.curve_sets}

    def section(number: int, make) -> str:
        # One section that cannot be computed (a failed fit, missing runs) must not
        # take the others with it: say why in its place.
        try:
            return make()
        except LensLLMError as error:
            return f"## {number}. (not computed: {error})"

    def ntk() -> str:
        text, found = section_ntk(suite, notes)
        knees.update(found)
        return text

    parts = [head, section(1, ntk)]
    if selection:
        parts.append(section(2, lambda: section_selection(suite, scorable)))
    parts.append(section(3, lambda: section_hessian(suite, scorable, knees, notes)))
    if notes:
        parts.append("## Data notes\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", nargs="?", default="zoo",
                        help="suite folder (default: the package's zoo suite)")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    parser.add_argument("--skip-selection", action="store_true",
                        help="leave out section 2 (the slowest)")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    try:
        text = study(args.suite, tasks, selection=not args.skip_selection)
    except InputError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
