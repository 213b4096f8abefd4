"""The robustness protocol: does a method's advantage survive data it was not tuned on?

Every setting of lensllm was chosen on the three bundled tasks, so the in-sample table
flatters it.  This module reruns the selection protocol on perturbed versions of the
same curves and reports, per *variant*, each method's mean PearCorr / RelAcc and its
worst cell against a reference method (AtS by default):

* ``in-sample`` -- the curves as given (target, budgets target/8 ... target/512);
* ``N models`` -- random subsets of N candidates per task (several seeds): the pooled
  fits see fewer curves;
* ``noise P %`` -- every observed fine-tuning loss multiplied by ``exp(P/100 * ε)``,
  ε ~ N(0, 1) (several seeds); the true loss at the target and the zero-shot loss are
  left untouched;
* ``target T`` -- other targets where every model has a measured loss (default: the
  target / 2 and target / 4), budgets T/8 ... T/512 that are measured sizes leaving
  every curve three sizes at or under them.  On a suite whose largest size is its
  target (the zoo: 16 ... 2,048 and 4,096) these are its own sizes 2,048 and 1,024.

A variant that cannot be built on the given tasks (subsets larger than every task, a
target some model lacks, a target without a budget that leaves three sizes) is left
out with its reason in :attr:`RobustnessReport.skipped`.

:func:`adaptive_protocol` replays the adaptive search (:mod:`lensllm.core.search`) on
the variants over a fine sweep of FLOPs budgets, next to AtS given at least the FLOPs
the search used and "train everyone at size s, pick the lowest".

:func:`leave_one_task_out` scores a tuning rule honestly: each task's cells under the
setting the rule picks on the other tasks.  Deterministic: the seeds fix every draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lensllm.core.benchmark import ratio_label
from lensllm.core.curves import CurveSet
from lensllm.core.evaluation import DEFAULT_RATIOS, pearcorr, relacc
from lensllm.core.search import AdaptiveSettings, fixed_baselines, sweep
from lensllm.core.selectors import Selector, make_selector
from lensllm.errors import InputError


@dataclass(frozen=True)
class RobustnessSettings:
    """Which variants the protocol runs (see the module docstring)."""

    subset_sizes: tuple[int, ...] = (10, 20)
    subset_seeds: int = 5
    noise_levels: tuple[float, ...] = (0.01, 0.02)
    noise_seeds: int = 3
    #: other targets; None: target/2 and target/4 where every model has them
    targets: tuple[int, ...] | None = None
    ratios: tuple[int, ...] = DEFAULT_RATIOS
    #: fewest sizes a budget must leave every curve (AtS and the laws need 3)
    min_sizes: int = 3

    def __post_init__(self) -> None:
        if any(n < 3 for n in self.subset_sizes):
            raise InputError("robustness: model subsets need at least 3 models")
        if self.subset_seeds < 1 or self.noise_seeds < 1:
            raise InputError("robustness: give at least one seed per variant")
        if any(not (0 < p < 1) for p in self.noise_levels):
            raise InputError("robustness: noise levels are fractions in (0, 1), e.g. 0.02")


@dataclass(frozen=True)
class Case:
    """One task of one variant: the curves a method sees, and the untouched truth."""

    curves: CurveSet
    truth: np.ndarray
    target: int
    budgets: tuple[int, ...]
    seed: int | None = None


@dataclass(frozen=True)
class Variant:
    name: str
    cases: tuple[Case, ...]


@dataclass(frozen=True)
class CellScore:
    variant: str
    task: str
    seed: int | None
    method: str
    budget: int
    target: int
    pearcorr: float
    relacc: float

    @property
    def label(self) -> str:
        seed = "" if self.seed is None else f" seed {self.seed}"
        return f"{self.task} {ratio_label(self.budget, self.target)}{seed}"


@dataclass(frozen=True)
class VariantSummary:
    """One method on one variant: means over its cells and its worst cell vs the reference."""

    variant: str
    method: str
    cells: int
    pearcorr: float
    relacc: float
    ref_pearcorr: float
    ref_relacc: float
    worst_pearcorr: float       # min over cells of (method - reference)
    worst_pearcorr_cell: str
    worst_relacc: float
    worst_relacc_cell: str

    def to_dict(self) -> dict:
        out = dict(vars(self))
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


@dataclass
class RobustnessReport:
    summaries: list[VariantSummary]
    cells: list[CellScore] = field(repr=False)
    reference: str = "ats"
    #: the variants left out on these tasks, each with why
    skipped: list[str] = field(default_factory=list)

    def get(self, variant: str, method: str) -> VariantSummary:
        for s in self.summaries:
            if (s.variant, s.method) == (variant, method):
                return s
        raise KeyError((variant, method))

    def to_dict(self) -> dict:
        return {"reference": self.reference,
                "variants": [s.to_dict() for s in self.summaries], "skipped": self.skipped}


# ----------------------------------------------------------------------------------
# variants


def _budgets(curves: CurveSet, target: int, ratios: Sequence[int], min_sizes: int
             ) -> tuple[int, ...]:
    """target / ratio for each ratio where that is a size every curve has measured and
    leaves every curve at least ``min_sizes`` sizes."""
    out = []
    for r in ratios:
        b = target // r
        if b <= 0 or target % r:
            continue
        if all(c.loss_at(b) is not None and int((c.sizes <= b).sum()) >= min_sizes
               for c in curves):
            out.append(b)
    return tuple(out)


def _has_target(curves: CurveSet, target: int) -> bool:
    return all(c.loss_at(target) is not None for c in curves)


def _noisy(curves: CurveSet, level: float, rng: np.random.Generator) -> CurveSet:
    out = []
    for c in curves:
        factor = np.exp(level * rng.standard_normal(c.losses.size))
        out.append(replace(c, losses=c.losses * factor))
    return CurveSet(out, task=curves.task)


def _seen(curves: CurveSet, target: int) -> CurveSet:
    """What a method may see: sizes below the target (the truth stays out of reach)."""
    return CurveSet((c.within(target - 1) for c in curves), task=curves.task)


def build_variants(tasks: Sequence[CurveSet], target: int,
                   settings: RobustnessSettings | None = None) -> list[Variant]:
    """The protocol's variants for ``tasks`` (each needs every model's loss at target)."""
    return _variants(tasks, target, settings)[0]


def _variants(tasks: Sequence[CurveSet], target: int, settings: RobustnessSettings | None
              ) -> tuple[list[Variant], list[str]]:
    """The variants, and each one left out with why."""
    s = settings or RobustnessSettings()
    skipped: list[str] = []
    for t in tasks:
        if not _has_target(t, target):
            raise InputError(f"{t.task}: every model needs a measured loss at the target "
                             f"{target} for the robustness protocol")

    def case(curves: CurveSet, tgt: int, seed: int | None = None,
             observed: CurveSet | None = None) -> Case | None:
        budgets = _budgets(curves, tgt, s.ratios, s.min_sizes)
        if not budgets:
            return None
        truth = curves.losses_at(tgt, "")
        return Case(_seen(observed or curves, tgt), truth, tgt, budgets, seed)

    def variant(name: str, cases, why: str) -> Variant | None:
        kept = tuple(c for c in cases if c is not None)
        if not kept:
            skipped.append(f"{name}: {why}")
        return Variant(name, kept) if kept else None

    no_budget = (f"no budget of target/{min(s.ratios)} ... target/{max(s.ratios)} is a size "
                 f"every curve has measured with {s.min_sizes} sizes at or under it")

    out = [variant("in-sample", [case(t, target) for t in tasks], no_budget)]
    largest = max((len(t) for t in tasks), default=0)
    for n in s.subset_sizes:
        cases = []
        for seed in range(s.subset_seeds):
            for k, t in enumerate(tasks):
                if len(t) <= n:
                    continue
                rng = np.random.default_rng([seed, k, n])
                pick = sorted(rng.choice(len(t), size=n, replace=False))
                cases.append(case(t.subset([t.models[i] for i in pick]), target, seed))
        out.append(variant(f"{n} models", cases,
                           f"every task has {n} candidates or fewer (the most: {largest})"
                           if largest <= n else no_budget))
    for level in s.noise_levels:
        cases = []
        for seed in range(s.noise_seeds):
            for k, t in enumerate(tasks):
                rng = np.random.default_rng([seed, k, round(level * 1e4)])
                cases.append(case(t, target, seed, observed=_noisy(t, level, rng)))
        out.append(variant(f"noise {100 * level:g} %", cases, no_budget))
    others = s.targets if s.targets is not None else (target // 2, target // 4)
    for tgt in others:
        if tgt == target:
            continue
        lacking = [t.task for t in tasks if not _has_target(t, tgt)]
        if lacking:
            skipped.append(f"target {tgt:,}: not every model of task {lacking[0]} has a "
                           f"measured loss at {tgt:,}")
            continue
        out.append(variant(f"target {tgt:,}", [case(t, tgt) for t in tasks], no_budget))
    return [v for v in out if v is not None], skipped


# ----------------------------------------------------------------------------------
# scoring


def score_cases(method: str | Selector, cases: Sequence[Case], variant: str = ""
                ) -> list[CellScore]:
    """PearCorr and RelAcc of ``method`` on every (case, budget) cell, in one batch."""
    selector = make_selector(method)
    requests = [(c.curves, b, c.target) for c in cases for b in c.budgets]
    owners = [c for c in cases for _ in c.budgets]
    out = []
    for case, sel in zip(owners, selector.select_many(requests), strict=True):
        chosen = sel.models.index(sel.chosen)
        out.append(CellScore(variant, case.curves.task, case.seed, selector.label,
                             sel.budget, sel.target, pearcorr(sel.scores, case.truth),
                             relacc(float(case.truth[chosen]), case.truth)))
    return out


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(cells: Sequence[CellScore], reference: str) -> list[VariantSummary]:
    """Per (variant, method): means, and the worst cell against ``reference``."""
    ref = {(c.variant, c.task, c.seed, c.budget, c.target): c for c in cells
           if c.method == reference}
    groups: dict[tuple[str, str], list[CellScore]] = {}
    for c in cells:
        groups.setdefault((c.variant, c.method), []).append(c)
    out = []
    for (variant, method), group in groups.items():
        pairs = [(c, ref.get((c.variant, c.task, c.seed, c.budget, c.target))) for c in group]
        pairs = [(c, r) for c, r in pairs if r is not None]
        dp = [(c.pearcorr - r.pearcorr, c.label) for c, r in pairs
              if math.isfinite(c.pearcorr) and math.isfinite(r.pearcorr)]
        dr = [(c.relacc - r.relacc, c.label) for c, r in pairs]
        wp = min(dp) if dp else (math.nan, "-")
        wr = min(dr) if dr else (math.nan, "-")
        out.append(VariantSummary(
            variant, method, len(group), _nanmean([c.pearcorr for c in group]),
            _nanmean([c.relacc for c in group]),
            _nanmean([r.pearcorr for _, r in pairs]), _nanmean([r.relacc for _, r in pairs]),
            wp[0], wp[1], wr[0], wr[1]))
    return out


def robustness(tasks: Sequence[CurveSet], target: int,
               methods: Sequence[str | Selector] = ("ats", "lensllm"),
               settings: RobustnessSettings | None = None,
               reference: str = "ats") -> RobustnessReport:
    """Run every method on every variant; summaries per (variant, method)."""
    selectors = [make_selector(m) for m in methods]
    labels = [s.label for s in selectors]
    if reference not in labels:
        selectors.insert(0, make_selector(reference))
    cells: list[CellScore] = []
    variants, skipped = _variants(tasks, target, settings)
    for v in variants:
        for sel in selectors:
            cells.extend(score_cases(sel, v.cases, v.name))
    return RobustnessReport(summarise(cells, reference), cells, reference, skipped)


# ----------------------------------------------------------------------------------
# leave-one-task-out


@dataclass(frozen=True)
class HeldOut:
    """A tuning rule's choice on the other tasks, scored on the held-out one."""

    task: str
    chosen: str
    pearcorr: float
    relacc: float
    ref_pearcorr: float
    ref_relacc: float
    worst_relacc: float
    worst_relacc_cell: str


def rule_pear_plus_rel(cells: Sequence[CellScore]) -> float:
    """The project's default objective: mean PearCorr + mean RelAcc."""
    return _nanmean([c.pearcorr for c in cells]) + _nanmean([c.relacc for c in cells])


def leave_one_task_out(candidates: Mapping[str, str | Selector], variants: Sequence[Variant],
                       objective: Callable[[Sequence[CellScore]], float] = rule_pear_plus_rel,
                       reference: str | Selector = "ats") -> list[HeldOut]:
    """For each task: pick the candidate with the best ``objective`` over the other
    tasks' cells (all variants given), score it on the task's own cells.  Ties go to
    the earlier candidate (put the default first)."""
    scored = {name: [c for v in variants for c in score_cases(spec, v.cases, v.name)]
              for name, spec in candidates.items()}
    ref_cells = [c for v in variants for c in score_cases(reference, v.cases, v.name)]
    tasks = list(dict.fromkeys(c.task for c in ref_cells))
    if len(tasks) < 2:
        raise InputError("leave-one-task-out needs at least two tasks")
    out = []
    for held in tasks:
        best, best_value = None, -math.inf
        for name, cells in scored.items():
            value = objective([c for c in cells if c.task != held])
            if value > best_value + 1e-9:
                best, best_value = name, value
        assert best is not None
        mine = [c for c in scored[best] if c.task == held]
        ref = {(c.variant, c.seed, c.budget, c.target): c for c in ref_cells if c.task == held}
        diffs = [(c.relacc - ref[(c.variant, c.seed, c.budget, c.target)].relacc,
                  f"{c.variant}: {c.label}") for c in mine]
        worst = min(diffs)
        out.append(HeldOut(held, best, _nanmean([c.pearcorr for c in mine]),
                           _nanmean([c.relacc for c in mine]),
                           _nanmean([r.pearcorr for r in ref.values()]),
                           _nanmean([r.relacc for r in ref.values()]), worst[0], worst[1]))
    return out


# ----------------------------------------------------------------------------------
# the adaptive search over a fine budget sweep

#: the FLOPs budgets (shares of fine-tuning every candidate at the target) of the sweep
FINE_BUDGETS = (0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.0125,
                0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.07, 0.08,
                0.09, 0.1, 0.125, 0.15, 0.2)


@dataclass(frozen=True)
class AdaptiveRow:
    """The search at one FLOPs budget on one variant, next to the fixed baselines."""

    variant: str
    budget: float
    flops: float                 # mean share used
    relacc: float                # mean over the variant's cases
    worst_task: str
    worst_relacc: float
    per_task: dict[str, float]
    #: AtS at the cheapest ratio using at least the FLOPs the search used (mean RelAcc,
    #: its FLOPs share), and the best "train everyone at size s" that fits the budget
    ats_relacc: float
    ats_flops: float
    lowest_relacc: float

    def to_dict(self) -> dict:
        return dict(vars(self))


def adaptive_protocol(variants: Sequence[Variant], tokens_per_example: Mapping[str, float],
                      budgets: Sequence[float] = FINE_BUDGETS, selector: str = "lensllm",
                      settings: AdaptiveSettings | None = None) -> list[AdaptiveRow]:
    """Replay the adaptive search at every budget on every case of ``variants``."""
    rows = []
    for v in variants:
        per_budget: list[list[tuple[str, float, float]]] = [[] for _ in budgets]
        fixed: list[list[dict]] = []
        for case in v.cases:
            task = case.curves.task
            if task not in tokens_per_example:
                raise InputError(f"{task}: the adaptive search needs its tokens per example")
            results = sweep(case.curves, case.target, tokens_per_example[task], budgets,
                            selector, settings)
            for k, r in enumerate(results):
                if r is not None:
                    chosen = case.curves.models.index(r.chosen)
                    per_budget[k].append((task, relacc(float(case.truth[chosen]), case.truth),
                                          r.flops_fraction))
            fixed.append(fixed_baselines(case.curves, case.truth, case.target))
        for k, share in enumerate(budgets):
            got = per_budget[k]
            if len(got) < len(v.cases):
                continue  # the warm-up does not fit in this budget
            tasks = list(dict.fromkeys(t for t, _, _ in got))
            per_task = {t: float(np.mean([r for tt, r, _ in got if tt == t])) for t in tasks}
            worst = min(per_task, key=per_task.get)
            used = float(np.mean([f for *_, f in got]))
            # AtS given at least as much compute as the search used (mean over cases)
            ats = [min((row for row in rows_ if row["method"] == "ats"
                        and row["flops"] >= used - 1e-12), key=lambda row: row["flops"],
                       default=None) for rows_ in fixed]
            ats_ok = [a for a in ats if a is not None]
            lowest = [max((row["relacc"] for row in rows_ if row["method"] == "lowest at size"
                           and row["flops"] <= share + 1e-12), default=math.nan)
                      for rows_ in fixed]
            rows.append(AdaptiveRow(
                v.name, float(share), used, float(np.mean([r for _, r, _ in got])), worst,
                per_task[worst], per_task,
                float(np.mean([a["relacc"] for a in ats_ok])) if ats_ok else math.nan,
                float(np.mean([a["flops"] for a in ats_ok])) if ats_ok else math.nan,
                _nanmean(lowest)))
    return rows
