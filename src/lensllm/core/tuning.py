"""The documented rules behind lensllm's tuned settings, and their leave-one-task-out check.

Four settings were chosen on the benchmark, each by a rule written down before its
evaluation tables were read:

* ``evidence_prior`` of the pooled predictor -- over :data:`PRIORS`, on the training
  tasks' cells of every robustness variant, the largest mean over variants of (mean
  PearCorr + mean RelAcc) among the values with no cell more than 10 RelAcc points
  below AtS; else the best worst cell; ties to the smaller prior;
* ``recency`` of the pooled predictor -- over :data:`RECENCY_CANDIDATES` (with the
  prior above), the largest mean PearCorr + mean RelAcc over the training tasks'
  in-sample cells; ties to the earlier candidate;
* the interval exponent ``gamma`` -- over :data:`GAMMAS`, the smallest value whose 90 %
  intervals cover at least 75 % of the candidates in every training cell; else the
  best worst cell;
* the adaptive search's ``p_keep`` -- over :data:`P_KEEPS`, the highest mean RelAcc of
  the search at the budgets :data:`ADAPTIVE_BUDGETS` on the training tasks, as given
  and under 2 % noise (3 seeds); ties to the smaller value.

Each rule is a table computed once (its objective for every candidate value on every
task) and a choice over a set of training tasks, so :func:`leave_one_task_out` scores
every task under the value chosen on the others without refitting.  The scripts
``benchmarks/tune_*.py`` print the full tables; ``lensllm bench --robustness --loto``
prints the leave-one-task-out check of all four.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from lensllm.core.benchmark import ratio_label
from lensllm.core.curves import CurveSet
from lensllm.core.evaluation import pearcorr, relacc
from lensllm.core.robustness import RobustnessSettings, Variant, build_variants
from lensllm.core.search import AdaptiveSettings, sweep
from lensllm.core.selectors import make_selector
from lensllm.core.selectors.ats import AtS
from lensllm.core.selectors.pooled import PooledSettings, pooled_lensllm_predict
from lensllm.core.uncertainty import conformal_interval, conformal_models
from lensllm.errors import InputError

# ----------------------------------------------------------------------------------
# evidence prior of the pooled predictor

PRIORS = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)


@dataclass(frozen=True)
class PriorCell:
    """One cell's pooled fit at prior 0, enough to remix it for any prior."""

    variant: str
    task: str
    truth: np.ndarray
    log_t: np.ndarray      # (R, n) transition sub-model at the target
    log_p: np.ndarray      # (n,) power-phase line at the target
    evidence: np.ndarray   # (R,)
    usable: np.ndarray     # (n,) curves the transition sub-model may weigh in on
    ats: np.ndarray        # AtS's predictions


def prior_cells(variants: Sequence[Variant]) -> list[PriorCell]:
    """One pooled fit per cell of ``variants`` (prior 0); the mix is redone per prior."""
    ats = make_selector("ats")
    out = []
    for v in variants:
        requests = [(c.curves.within(b), b, c.target) for c in v.cases for b in c.budgets]
        owners = [c for c in v.cases for _ in c.budgets]
        fits = pooled_lensllm_predict(requests, PooledSettings(evidence_prior=0.0))
        for fit, sel, case in zip(fits, ats.select_many(requests), owners, strict=True):
            log_t, log_p = fit.log_components(float(case.target))
            out.append(PriorCell(v.name, case.curves.task, case.truth, log_t[..., 0],
                                 log_p[:, 0], fit.evidence, fit.weight.max(0) > 0,
                                 sel.predicted))
    return out


def prior_scores(cells: Sequence[PriorCell], prior: float, tasks: Sequence[str]
                 ) -> dict[str, tuple[float, float, float, float, float]]:
    """Per variant: mean PearCorr, mean RelAcc, AtS's two means, worst RelAcc vs AtS."""
    out = {}
    for variant in dict.fromkeys(c.variant for c in cells):
        p, r, ap, ar, diff = [], [], [], [], []
        for c in cells:
            if c.variant != variant or c.task not in tasks:
                continue
            # the pooled predictor's mix (selectors.pooled), redone for this prior
            w = 1.0 / (1.0 + np.exp(-np.clip(c.evidence - prior, -700, 700)))
            w = np.where(c.usable[None, :], w[:, None], 0.0)
            pred = np.exp((w * c.log_t + (1 - w) * c.log_p[None]).mean(0))
            p.append(pearcorr(pred, c.truth))
            r.append(relacc(float(c.truth[np.argmin(pred)]), c.truth))
            ap.append(pearcorr(c.ats, c.truth))
            ar.append(relacc(float(c.truth[np.argmin(c.ats)]), c.truth))
            diff.append(r[-1] - ar[-1])
        if p:
            out[variant] = (float(np.nanmean(p)), float(np.mean(r)), float(np.nanmean(ap)),
                            float(np.mean(ar)), float(min(diff)))
    return out


def choose_prior(cells: Sequence[PriorCell], tasks: Sequence[str]) -> float:
    """The evidence-prior rule (module docstring) on ``tasks``."""
    def key(prior: float) -> tuple:
        s = prior_scores(cells, prior, tasks)
        worst = min(v[4] for v in s.values())
        if worst >= -10:
            return (1, float(np.mean([v[0] + v[1] for v in s.values()])), -prior)
        return (0, worst, -prior)
    return max(PRIORS, key=key)


# ----------------------------------------------------------------------------------
# recency scales of the pooled predictor

RECENCY_SCALES = (0.5, 0.7071, 1.0, 1.4142, 2.0)
#: candidate settings in tie-break order (earlier wins a tie)
RECENCY_CANDIDATES: dict[str, PooledSettings] = {
    "avg": PooledSettings(recency=RECENCY_SCALES),
    **{f"{s:g}": PooledSettings(recency=s) for s in reversed(RECENCY_SCALES)},
}


@dataclass
class Cells:
    """PearCorr and RelAcc per task, one entry per budget (budgets in the same order)."""

    budgets: list[int]
    pear: dict[str, list[float]]
    rel: dict[str, list[float]]
    #: mean weight of the transition sub-model per cell (pooled predictor only)
    weight: dict[str, list[float]] | None = None

    def mean(self, tasks: Sequence[str] | None = None) -> tuple[float, float]:
        tasks = list(tasks or self.pear)
        return (float(np.mean([v for t in tasks for v in self.pear[t]])),
                float(np.mean([v for t in tasks for v in self.rel[t]])))


def run_cells(method: PooledSettings | str, curves: Mapping[str, CurveSet], target: int,
              budgets: Sequence[int]) -> Cells:
    """One method on every (task, budget) cell; method is pooled settings or ``"ats"``."""
    requests = [(curves[t].within(b), b, target) for t in curves for b in budgets]
    weights: list[float] | None = None
    if method == "ats":
        predicted = [s.predicted for s in AtS().select_many(requests)]
    else:
        fits = pooled_lensllm_predict(requests, method)  # type: ignore[arg-type]
        predicted = [p.predicted for p in fits]
        weights = [float(p.weight.mean()) for p in fits]
    pear: dict[str, list[float]] = {t: [] for t in curves}
    rel: dict[str, list[float]] = {t: [] for t in curves}
    weight: dict[str, list[float]] = {t: [] for t in curves}
    for k, ((seen, _, _), p) in enumerate(zip(requests, predicted, strict=True)):
        truth = np.array([curves[seen.task][m].loss_at(target) for m in seen.models])
        pear[seen.task].append(pearcorr(p, truth))
        rel[seen.task].append(relacc(float(truth[int(np.argmin(p))]), truth))
        if weights is not None:
            weight[seen.task].append(weights[k])
    return Cells(list(budgets), pear, rel, weight if weights is not None else None)


def choose_recency(results: Mapping[str, Cells], train: Sequence[str],
                   margin: float = 0.0) -> str:
    """The recency rule: largest mean PearCorr + mean RelAcc on the training tasks.

    With ``margin`` > 0 (a post-hoc variant of ``benchmarks/tune_lensllm.py``): "avg"
    unless a single scale beats it by more than ``margin`` points."""
    best, best_score = None, -np.inf
    for name, cells in results.items():       # dict order = tie-break order
        score = sum(cells.mean(train)) - (margin if name != "avg" else 0.0)
        if score > best_score + 1e-9:
            best, best_score = name, score
    assert best is not None
    return best


# ----------------------------------------------------------------------------------
# interval exponent

GAMMAS = tuple(round(1.0 + 0.05 * k, 2) for k in range(21))


def coverage_table(tasks: Sequence[CurveSet], target: int, budgets: Sequence[int],
                   method: str = "lensllm", gammas: Sequence[float] = GAMMAS,
                   level: float = 0.9) -> dict[float, dict[tuple[str, int], float]]:
    """Coverage x100 of the ``level`` intervals per gamma and (task, budget) cell.

    The predictor runs once per cell and back-test; only the scaling differs by gamma."""
    selector = make_selector(method)
    requests = [(t, b, target) for t in tasks for b in budgets]
    cache: dict[tuple, np.ndarray] = {}

    def predictor(reqs):
        def key(r):
            return (r[0].task, tuple(r[0].models), r[1], r[2])
        missing = [r for r in reqs if key(r) not in cache]
        for r, sel in zip(missing, selector.select_many(missing) if missing else [],
                          strict=True):
            cache[key(r)] = sel.predicted
        return [cache[key(r)] for r in reqs]

    predicted = predictor(requests)
    out: dict[float, dict[tuple[str, int], float]] = {}
    for gamma in gammas:
        models = conformal_models(predictor, requests, max(selector.required_sizes, 2), gamma)
        out[gamma] = {}
        for (task, budget, _), pred, model in zip(requests, predicted, models, strict=True):
            lo, hi = conformal_interval(pred, model, math.log2(target / budget), level)
            truth = task.losses_at(target, "")
            out[gamma][(task.task, budget)] = 100.0 * float(np.mean((truth >= lo) &
                                                                    (truth <= hi)))
    return out


def choose_gamma(table: Mapping[float, Mapping[tuple[str, int], float]],
                 train: Sequence[str]) -> float:
    """The interval rule (module docstring) on the cells of ``train``."""
    def worst(gamma: float) -> float:
        return min(v for (t, _), v in table[gamma].items() if t in train)
    for gamma in table:
        if worst(gamma) >= 75.0:
            return gamma
    return max(table, key=worst)


# ----------------------------------------------------------------------------------
# the adaptive search's drop threshold

P_KEEPS = (0.01, 0.02, 0.05, 0.1, 0.2)
ADAPTIVE_BUDGETS = (0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05,
                    0.06, 0.07, 0.08, 0.1)


def p_keep_table(tasks: Sequence[CurveSet], target: int,
                 tokens_per_example: Mapping[str, float],
                 p_keeps: Sequence[float] = P_KEEPS,
                 budgets: Sequence[float] = ADAPTIVE_BUDGETS) -> dict[float, dict[str, list]]:
    """RelAcc of the search per p_keep and task: one entry per (case, budget that fits),
    the cases the curves as given and under 2 % noise (seeds 0-2)."""
    variants = build_variants(tasks, target, RobustnessSettings(
        subset_sizes=(), noise_levels=(0.02,), noise_seeds=3, targets=()))
    table: dict[float, dict[str, list]] = {p: {t.task: [] for t in tasks} for p in p_keeps}
    for p in p_keeps:
        for variant in variants:
            for case in variant.cases:
                task = case.curves.task
                results = sweep(case.curves, target, tokens_per_example[task], budgets,
                                "lensllm", AdaptiveSettings(p_keep=p))
                table[p][task] += [
                    relacc(float(case.truth[case.curves.models.index(r.chosen)]), case.truth)
                    for r in results if r is not None]
    return table


def choose_p_keep(table: Mapping[float, Mapping[str, list]], train: Sequence[str]) -> float:
    """The p_keep rule (module docstring) on ``train``."""
    def mean(p: float) -> float:
        values = [v for t in train for v in table[p][t]]
        return round(float(np.mean(values)), 9) if values else -math.inf
    return max(table, key=lambda p: (mean(p), -p))


# ----------------------------------------------------------------------------------
# leave-one-task-out of all four


@dataclass(frozen=True)
class HeldOutSetting:
    """One tuned setting, chosen on every task but ``task``, scored on ``task``."""

    setting: str
    task: str
    chosen: str              # the rule's value without the task
    in_sample: str           # the rule's value on every task
    metrics: dict[str, float]
    worst: str               # the held-out task's worst cell, in words

    def to_dict(self) -> dict:
        return {**vars(self), "metrics": {k: (v if math.isfinite(v) else None)
                                           for k, v in self.metrics.items()}}


def _check_tasks(tasks: Sequence[CurveSet]) -> list[str]:
    names = [t.task for t in tasks]
    if len(set(names)) < 2:
        raise InputError("leave-one-task-out needs at least two tasks")
    return names


def loto_lensllm(tasks: Sequence[CurveSet], target: int, budgets: Sequence[int],
                 variants: Sequence[Variant] | None = None) -> list[HeldOutSetting]:
    """The evidence prior, then the recency scales with that prior, both chosen on the
    other tasks; the held-out task's in-sample cells against AtS."""
    names = _check_tasks(tasks)
    variants = variants if variants is not None else build_variants(tasks, target)
    rows = prior_cells(variants)
    curves = {t.task: t for t in tasks}
    ats = run_cells("ats", curves, target, budgets)
    results: dict[float, dict[str, Cells]] = {}

    def choose(train: Sequence[str]) -> tuple[float, str]:
        prior = choose_prior(rows, train)
        if prior not in results:
            results[prior] = {name: run_cells(replace(s, evidence_prior=prior), curves,
                                              target, budgets)
                              for name, s in RECENCY_CANDIDATES.items()}
        return prior, choose_recency(results[prior], train)

    full = choose(names)
    out = []
    for held in names:
        prior, name = choose([t for t in names if t != held])
        cells = results[prior][name]
        diff = np.subtract(cells.rel[held], ats.rel[held])
        k = int(np.argmin(diff))
        out.append(HeldOutSetting(
            "lensllm: evidence_prior, recency", held, f"{prior:g}, {name}",
            f"{full[0]:g}, {full[1]}",
            {"PearCorr": float(np.nanmean(cells.pear[held])),
             "AtS PearCorr": float(np.nanmean(ats.pear[held])),
             "RelAcc": float(np.mean(cells.rel[held])),
             "AtS RelAcc": float(np.mean(ats.rel[held]))},
            f"RelAcc vs AtS {diff[k]:+.1f} ({ratio_label(budgets[k], target)})"))
    return out


def loto_gamma(tasks: Sequence[CurveSet], target: int, budgets: Sequence[int],
               method: str = "lensllm") -> list[HeldOutSetting]:
    """The interval exponent chosen on the other tasks; the held-out task's coverage."""
    names = _check_tasks(tasks)
    table = coverage_table(tasks, target, budgets, method)
    full = choose_gamma(table, names)
    out = []
    for held in names:
        gamma = choose_gamma(table, [t for t in names if t != held])
        cells = {b: v for (t, b), v in table[gamma].items() if t == held}
        worst = min(cells, key=cells.get)
        out.append(HeldOutSetting(
            "interval gamma", held, f"{gamma:g}", f"{full:g}",
            {"coverage": float(np.mean(list(cells.values()))),
             "min cell": cells[worst]},
            f"coverage {cells[worst]:.1f} ({ratio_label(worst, target)})"))
    return out


def loto_p_keep(tasks: Sequence[CurveSet], target: int,
                tokens_per_example: Mapping[str, float]) -> list[HeldOutSetting]:
    """The search's p_keep chosen on the other tasks; the held-out task's RelAcc."""
    names = _check_tasks(tasks)
    table = p_keep_table(tasks, target, tokens_per_example)
    full = choose_p_keep(table, names)
    out = []
    for held in names:
        p = choose_p_keep(table, [t for t in names if t != held])
        values = table[p][held]
        out.append(HeldOutSetting(
            "adaptive p_keep", held, f"{p:g}", f"{full:g}",
            {"RelAcc": float(np.mean(values)) if values else math.nan,
             "min": float(min(values)) if values else math.nan},
            f"RelAcc {min(values):.1f} (its lowest budget x case)" if values else "-"))
    return out


def leave_one_task_out_settings(
        tasks: Sequence[CurveSet], target: int, budgets: Sequence[int],
        tokens_per_example: Mapping[str, float] | None = None,
        variants: Sequence[Variant] | None = None,
        on_setting: Callable[[list[HeldOutSetting]], None] | None = None
        ) -> list[HeldOutSetting]:
    """Leave-one-task-out of every tuned setting (the adaptive one only when every task
    has its tokens per example).  ``on_setting`` gets each setting's rows as soon as
    they are done (the whole check takes minutes; a caller can print as it goes)."""
    _check_tasks(tasks)
    steps: list[Callable[[], list[HeldOutSetting]]] = [
        lambda: loto_lensllm(tasks, target, budgets, variants),
        lambda: loto_gamma(tasks, target, budgets)]
    if tokens_per_example is not None and all(t.task in tokens_per_example for t in tasks):
        steps.append(lambda: loto_p_keep(tasks, target, tokens_per_example))
    out = []
    for step in steps:
        rows = step()
        if on_setting is not None:
            on_setting(rows)
        out.extend(rows)
    return out
