"""Compute accounting and the adaptive search over data size.

* :class:`FlopsLedger` -- every fine-tuning run actually done is charged
  ``6 x params x tokens`` (tokens = examples x tokens per example; epochs cancel when
  the reference, fine-tuning every candidate at the target size, is counted the same
  way).  The ledger's fraction is its total over that reference.
* :class:`AdaptiveSearch` -- drops candidates only for being unlikely to win:
  Every candidate is fine-tuned on the ``warmup`` smallest sizes.  Then, rung after rung:

  1. the selector (default ``lensllm``) predicts every candidate's loss at the target
     from all the points trained so far;
  2. the error model is fitted to the *survivors'* own back-tests (their curves cut by
     1 ... 4 doublings, predicting the largest size they share; split-conformal,
     horizon-scaled, see :mod:`lensllm.core.uncertainty`) and scaled to the horizon
     being extrapolated, log2(target / rung size); P(best) of every survivor is computed
     against every other survivor;
  3. a survivor is dropped only if even an upper bound on its P(best), the probability
     that it beats the leader, is below ``p_keep`` (the leader never is);
  4. the search stops when the leader's P(best) >= ``p_stop``, one survivor is left or
     the ladder ends; otherwise every survivor is trained on the next (doubled) size.

  The FLOPs budget never decides who survives, only how far the survivors get: when the
  next rung does not fit in what is left, the survivors are trained on it in order of
  P(best) as long as each fits (a prefix: more budget trains a superset), then that
  prefix on the size after as far as it fits, and so on while at least two fit; the
  choice is the lowest predicted loss among all survivors on all points trained.  So
  the decisions up to the last full rung do not depend on the budget at all: a larger
  budget sees the same rungs and then more.

  :func:`replay` runs it on a table of measured curves (each loss read as if it had just
  been trained); :func:`sweep` replays many budgets, sharing every fit between them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.special import ndtr

from lensllm.core.curves import Curve, CurveSet
from lensllm.core.selectors import Selection, Selector, make_selector
from lensllm.core.uncertainty import DEFAULT_GAMMA, conformal_models, probability_best
from lensllm.errors import InputError


def training_flops(params: float, examples: int, tokens_per_example: float) -> float:
    """FLOPs of fine-tuning ``params`` parameters on ``examples`` examples (one epoch)."""
    return 6.0 * float(params) * float(tokens_per_example) * float(examples)


@dataclass
class FlopsLedger:
    """Every run charged: (model, size, FLOPs).

    ``tokens_per_example`` is one number, or one per model (candidates with different
    tokenizers see the same examples as different numbers of tokens).
    """

    tokens_per_example: float | dict[str, float]
    entries: list[tuple[str, int, float]] = field(default_factory=list)

    def tokens(self, model: str) -> float:
        if isinstance(self.tokens_per_example, dict):
            return float(self.tokens_per_example[model])
        return float(self.tokens_per_example)

    def cost(self, model: str, params: float, size: int) -> float:
        return training_flops(params, size, self.tokens(model))

    def charge(self, model: str, params: float, size: int) -> float:
        flops = self.cost(model, params, size)
        self.entries.append((model, int(size), flops))
        return flops

    @property
    def total(self) -> float:
        return float(sum(f for *_, f in self.entries))

    def by_model(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for model, _, flops in self.entries:
            out[model] = out.get(model, 0.0) + flops
        return out

    def reference(self, params: dict[str, float], target: int) -> float:
        """FLOPs of fine-tuning every candidate once at the target size."""
        return float(sum(self.cost(m, p, target) for m, p in params.items()))


@dataclass
class Rung:
    size: int
    trained: list[str]
    survivors: list[str]
    leader: str
    leader_p_best: float
    flops_fraction: float


@dataclass
class HalvingResult:
    chosen: str
    ledger: FlopsLedger
    reference_flops: float
    rungs: list[Rung]
    selection: Selection
    stop_reason: str

    @property
    def flops_fraction(self) -> float:
        return self.ledger.total / self.reference_flops

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen, "flops_fraction": self.flops_fraction,
            "stop_reason": self.stop_reason,
            "rungs": [vars(r) for r in self.rungs],
        }


def check_adaptive_method(selector: Selector, where: str = "") -> None:
    """The search drops candidates by their predicted loss at the target: a method that
    only ranks (zero-shot, subset loss, model size, weight metrics) cannot drive it."""
    if not selector.predicts_loss:
        raise InputError(
            f"{where}the adaptive search needs a method that predicts the loss at the "
            f"target; {selector.label!r} only ranks the candidates: use search: grid, or "
            "a method such as lensllm, ats or rectified")


#: a partial rung trains at least two survivors: one alone teaches nothing about the order
_MIN_GROUP = 2


@dataclass(frozen=True)
class AdaptiveSettings:
    """How the search decides (``p_keep``, ``p_stop``, ``gamma``) and what it may spend.

    ``p_keep`` and ``p_stop`` are set by the rule in ``benchmarks/tune_adaptive.py``;
    ``gamma`` is the interval exponent of :mod:`lensllm.core.uncertainty`.
    """

    warmup: int = 3
    p_keep: float = 0.2
    p_stop: float = 0.95
    gamma: float = DEFAULT_GAMMA
    level: float = 0.9
    flops_fraction: float = 0.03

    def __post_init__(self) -> None:
        if self.warmup < 2:
            raise InputError("halving: warmup must be at least 2 sizes")
        if not 0 <= self.p_keep < 1 or not 0 < self.p_stop <= 1:
            raise InputError("halving: p_keep must be in [0, 1) and p_stop in (0, 1]")
        if self.flops_fraction <= 0:
            raise InputError("halving: flops_fraction must be > 0")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise InputError("halving: gamma must be > 0")


def beat_bound(predicted: np.ndarray, log_sd: float) -> np.ndarray:
    """Upper bound on each candidate's P(best): P(it beats the current leader), for
    independent normal log errors of scale ``log_sd`` (1 for everyone when the scale
    is unknown).  Unlike P(best) itself it does not shrink as more candidates share
    the lead, so thirty near-ties are not all dropped at once."""
    mu = np.log(np.asarray(predicted, dtype=float))
    if not math.isfinite(log_sd):
        return np.ones(mu.size)
    if log_sd <= 0:
        return (mu == mu.min()).astype(float)
    return ndtr((mu.min() - mu) / (math.sqrt(2.0) * log_sd))


@dataclass(frozen=True)
class _Decision:
    selection: Selection
    alive: list[str]          # survivors after dropping, best P(best) first
    p_best: dict[str, float]  # against every candidate alive before the drop
    bound: dict[str, float]   # P(beats the leader): what a drop is decided on
    leader: str


class AdaptiveSearch:
    """The search.  Its ``cache`` keeps every fit by the points it saw, so runs at
    several budgets on the same curves (:func:`sweep`) share their common rungs."""

    def __init__(self, selector: str | Selector = "lensllm",
                 settings: AdaptiveSettings | None = None) -> None:
        self.selector = make_selector(selector)
        self.settings = settings or AdaptiveSettings()
        self.cache: dict[tuple, Any] = {}
        check_adaptive_method(self.selector)

    # ------------------------------------------------------------------ fitting
    def _curves(self, candidates: Sequence[Curve], points: dict[str, dict[int, float]],
                task: str) -> CurveSet:
        # Every other field (zero-shot, params, NTK, weight metrics) travels along.
        return CurveSet(
            (replace(c, sizes=np.array(sorted(points[c.model]), dtype=np.int64),
                     losses=np.array([points[c.model][n] for n in sorted(points[c.model])]))
             for c in candidates), task=task)

    @staticmethod
    def _key(points: dict[str, dict[int, float]], alive: Sequence[str], kind: str) -> tuple:
        return (kind, tuple(alive),
                tuple((m, tuple(sorted(p.items()))) for m, p in sorted(points.items())))

    def _predict(self, curves: CurveSet, target: int) -> Selection:
        budget = int(max(c.sizes.max() for c in curves))
        return self.selector.select_many([(curves, budget, target)])[0]

    def _decide(self, candidates: Sequence[Curve], points: dict[str, dict[int, float]],
                alive: list[str], size: int, target: int, task: str) -> _Decision:
        key = self._key(points, alive, "decide")
        if key in self.cache:
            return self.cache[key]
        s = self.settings
        curves = self._curves(candidates, points, task)
        selection = self._predict(curves, target)
        model = conformal_models(
            lambda reqs: [x.predicted for x in self.selector.select_many(reqs)],
            [(curves, size, target)], max(self.selector.required_sizes, 2), s.gamma,
            alive=[alive])[0]
        idx = [selection.models.index(m) for m in alive]
        pred = selection.predicted[idx]
        sd = model.sd_rel_at(math.log2(target / size), s.level)
        p = probability_best(pred, sd if math.isfinite(sd) else math.nan)
        order = sorted(range(len(alive)), key=lambda k: (-p[k], pred[k]))
        leader = alive[order[0]]
        bound = beat_bound(pred, sd)
        kept = [alive[k] for k in order if alive[k] == leader or bound[k] >= s.p_keep]
        decision = _Decision(selection, kept, {alive[k]: float(p[k]) for k in order},
                             {alive[k]: float(bound[k]) for k in order}, leader)
        selection.details["error_model"] = model
        self.cache[key] = decision
        return decision

    def _final(self, candidates: Sequence[Curve], points: dict[str, dict[int, float]],
               alive: list[str], target: int, task: str) -> tuple[str, Selection]:
        """After a partial rung: the survivor with the lowest predicted loss."""
        key = self._key(points, alive, "final")
        if key not in self.cache:
            selection = self._predict(self._curves(candidates, points, task), target)
            pred = {m: selection.predicted[selection.models.index(m)] for m in alive}
            self.cache[key] = (min(alive, key=lambda m: pred[m]), selection)
        return self.cache[key]

    # ------------------------------------------------------------------ the search
    def run(self, train: Callable[[list[str], int], dict[str, float]],
            candidates: Sequence[Curve], sizes: Sequence[int], target: int,
            tokens_per_example: float | dict[str, float],
            task: str = "task") -> HalvingResult:
        """Search the candidates.

        ``train(models, size)`` fine-tunes (or looks up) every model of a rung -- in
        parallel if it can -- and returns their test losses; ``candidates`` carry the
        names, parameter counts and zero-shot losses (their measured points are
        ignored); ``sizes`` is the ladder of subset sizes.
        """
        s = self.settings
        ladder = sorted(int(n) for n in sizes if 0 < n < target)
        if len(ladder) < s.warmup:
            raise InputError(f"halving needs at least {s.warmup} sizes below the target")
        missing = [c.model for c in candidates if c.params is None]
        if missing:
            raise InputError(f"halving needs every candidate's parameter count; missing for "
                             f"{', '.join(missing)}")
        ledger = FlopsLedger(tokens_per_example)
        params = {c.model: float(c.params) for c in candidates}
        reference = ledger.reference(params, target)
        limit = s.flops_fraction * reference
        points: dict[str, dict[int, float]] = {c.model: {} for c in candidates}

        def train_rung(models: list[str], size: int) -> None:
            losses = train(list(models), size)
            for model in models:
                points[model][size] = float(losses[model])
                ledger.charge(model, params[model], size)

        alive = [c.model for c in candidates]
        warmup_cost = sum(ledger.cost(m, params[m], n) for m in alive
                          for n in ladder[: s.warmup])
        if warmup_cost > limit * (1 + 1e-12):
            raise InputError(
                f"the FLOPs budget ({100 * s.flops_fraction:.3g} % of fine-tuning every "
                f"candidate at the target) is smaller than the warm-up, which trains every "
                f"candidate on the {s.warmup} smallest sizes ({100 * warmup_cost / reference:.3g}"
                " %); raise the FLOPs budget or start the ladder at a smaller size")
        for size in ladder[: s.warmup]:
            train_rung(alive, size)
        level = s.warmup
        rungs: list[Rung] = []
        while True:
            size = ladder[level - 1]
            decision = self._decide(candidates, points, alive, size, target, task)
            p_lead = decision.p_best[decision.leader]
            rungs.append(Rung(size, [], list(decision.alive), decision.leader, p_lead,
                              ledger.total / reference))
            alive = decision.alive
            if len(alive) == 1:
                reason = "one candidate left"
            elif p_lead >= s.p_stop:
                reason = f"leader P(best) {p_lead:.3f} >= {s.p_stop}"
            elif level >= len(ladder):
                reason = "no larger size below the target"
            else:
                nxt = ladder[level]
                cost = {m: ledger.cost(m, params[m], nxt) for m in alive}
                if ledger.total + sum(cost.values()) <= limit * (1 + 1e-12):
                    train_rung(alive, nxt)
                    rungs[-1].trained = list(alive)
                    level += 1
                    continue
                # The budget decides how far, not who: the survivors most likely to be
                # best are trained on the next size while each fits; nobody is dropped.
                # What is left goes deeper on the most likely: each further size
                # trains the prefix of the previous one that fits.
                group, depth, trained_any = list(alive), level, []
                while depth < len(ladder) and len(group) >= _MIN_GROUP:
                    size_k = ladder[depth]
                    part, spend = [], ledger.total
                    for m in group:
                        c = ledger.cost(m, params[m], size_k)
                        if spend + c > limit * (1 + 1e-12):
                            break
                        part.append(m)
                        spend += c
                    if len(part) < _MIN_GROUP:
                        break
                    train_rung(part, size_k)
                    trained_any.append((size_k, part))
                    group, depth = part, depth + 1
                if not trained_any:
                    return HalvingResult(decision.leader, ledger, reference, rungs,
                                         decision.selection,
                                         "the next rung would exceed the FLOPs budget")
                rungs[-1].trained = list(trained_any[0][1])
                chosen, selection = self._final(candidates, points, alive, target, task)
                return HalvingResult(chosen, ledger, reference, rungs, selection,
                                     "FLOPs budget: " + ", ".join(
                                         f"{len(p)} of {len(alive)} survivors on {n:,}"
                                         for n, p in trained_any))
            return HalvingResult(decision.leader, ledger, reference, rungs,
                                 decision.selection, reason)


def _lookup(curves: CurveSet) -> Callable[[list[str], int], dict[str, float]]:
    def lookup(models: list[str], size: int) -> dict[str, float]:
        out = {}
        for model in models:
            value = curves[model].loss_at(size)
            if value is None:
                raise InputError(f"{curves.task}: model {model!r} has no measured loss at "
                                 f"size {size}; the replay needs every size of the ladder")
            out[model] = value
        return out
    return lookup


def replay(curves: CurveSet, target: int, tokens_per_example: float | dict[str, float],
           selector: str | Selector | AdaptiveSearch = "lensllm",
           settings: AdaptiveSettings | None = None) -> HalvingResult:
    """Run the search on measured curves, reading each run's loss from the table.

    ``selector`` may be a ready :class:`AdaptiveSearch` (its settings and cache are
    used; ``settings`` must then be None)."""
    if isinstance(selector, AdaptiveSearch):
        if settings is not None:
            raise InputError("replay: give the settings to the AdaptiveSearch itself")
        search = selector
    else:
        search = AdaptiveSearch(selector, settings)
    ladder = sorted({int(n) for c in curves for n in c.sizes if n < target})
    return search.run(_lookup(curves), list(curves), ladder, target, tokens_per_example,
                      task=curves.task)


def sweep(curves: CurveSet, target: int, tokens_per_example: float | dict[str, float],
          flops_budgets: Sequence[float], selector: str | Selector = "lensllm",
          settings: AdaptiveSettings | None = None) -> list[HalvingResult | None]:
    """:func:`replay` at every FLOPs budget (None where the warm-up does not fit)."""
    base = settings or AdaptiveSettings()
    search = AdaptiveSearch(selector, base)
    out: list[HalvingResult | None] = []
    for share in flops_budgets:
        search.settings = replace(base, flops_fraction=float(share))
        try:
            out.append(replay(curves, target, tokens_per_example, search))
        except InputError as exc:
            if "smaller than the warm-up" not in str(exc):
                raise
            out.append(None)
    return out


def fixed_baselines(curves: CurveSet, truth: np.ndarray, target: int,
                    method: str | Selector = "ats") -> list[dict[str, Any]]:
    """The fixed-budget rows to compare at equal FLOPs: ``method`` at every budget
    target/2^k that leaves 3 sizes (every candidate trained on every size <= budget),
    and "train everyone at size s, pick the lowest" (one run per candidate)."""
    from lensllm.core.evaluation import relacc

    sizes = sorted({int(n) for c in curves for n in c.sizes if n < target})
    selector = make_selector(method)
    rows = []
    for budget in sizes[2:]:
        chosen = selector.select(curves, budget, target).chosen
        rows.append({"method": selector.label, "budget": budget,
                     "flops": sum(n for n in sizes if n <= budget) / target,
                     "relacc": relacc(float(truth[curves.models.index(chosen)]), truth)})
    for size in _everyones(curves, sizes):
        losses = curves.losses_at(size, "the baseline trains everyone at that size")
        rows.append({"method": "lowest at size", "budget": size, "flops": size / target,
                     "relacc": relacc(float(truth[int(np.argmin(losses))]), truth)})
    return rows


def _everyones(tasks: CurveSet | Sequence[CurveSet], sizes: Any) -> list[int]:
    """The ``sizes`` every candidate of every task has measured, sorted: "train everyone
    at size s" needs them all (a suite whose run at s failed for one model has none)."""
    sets = [tasks] if isinstance(tasks, CurveSet) else list(tasks)
    return sorted(int(n) for n in sizes
                  if all(c.loss_at(int(n)) is not None for t in sets for c in t))


def fixed_budget_fraction(budget: int, target: int, sizes: Sequence[int]) -> float:
    """FLOPs share of training every candidate on every size <= budget (same for all
    models, so parameter counts cancel)."""
    return float(sum(n for n in sizes if n <= budget)) / target


def adaptive_benchmark(tasks: Sequence[CurveSet], target: int,
                       tokens_per_example: dict[str, float], flops_budgets: Sequence[float],
                       selector: str | Selector = "lensllm",
                       settings: AdaptiveSettings | None = None,
                       fixed_method: str | Selector = "ats",
                       fixed_budgets: Sequence[int] = ()) -> tuple[list[dict], list[dict]]:
    """Replay the adaptive search per FLOPs budget, and the fixed baselines per budget.

    Returns (adaptive rows, fixed rows).  Adaptive rows have per-task RelAcc and FLOPs
    share (budgets whose warm-up does not fit are left out); fixed rows are
    ``fixed_method`` at each of ``fixed_budgets`` and "train everyone at size s, pick
    the lowest" at each size s <= the largest budget, with their FLOPs shares.
    """
    from lensllm.core.benchmark import ratio_label
    from lensllm.core.evaluation import relacc

    results = {}
    for task in tasks:
        results[task.task] = sweep(task, target, tokens_per_example[task.task], flops_budgets,
                                   selector, settings)
    truths = {t.task: t.losses_at(target, "the replay scores against the true loss")
              for t in tasks}
    adaptive = []
    for k, share in enumerate(flops_budgets):
        if any(results[t.task][k] is None for t in tasks):
            continue
        row: dict[str, Any] = {"budget": share, "relacc": {}, "flops": {}, "chosen": {},
                               "stop": {}}
        for task in tasks:
            result = results[task.task][k]
            truth = truths[task.task]
            row["relacc"][task.task] = relacc(truth[task.models.index(result.chosen)], truth)
            row["flops"][task.task] = result.flops_fraction
            row["chosen"][task.task] = result.chosen
            row["stop"][task.task] = result.stop_reason
        adaptive.append(row)
    fixed = []
    method = make_selector(fixed_method)
    sizes = tasks[0][0].sizes.tolist()
    for budget in fixed_budgets:
        row = {"label": f"{method.label} at {ratio_label(budget, target)}",
               "ratio": ratio_label(budget, target), "budget": budget, "relacc": {},
               "flops": fixed_budget_fraction(budget, target, sizes)}
        for task in tasks:
            chosen = method.select(task, budget, target).chosen
            truth = truths[task.task]
            row["relacc"][task.task] = relacc(truth[task.models.index(chosen)], truth)
        fixed.append(row)
    for size in _everyones(tasks, (n for n in sizes if n <= max(fixed_budgets, default=0))):
        row = {"label": f"lowest at {size:,}", "ratio": ratio_label(size, target),
               "budget": size, "relacc": {}, "flops": size / target}
        for task in tasks:
            truth = truths[task.task]
            losses = task.losses_at(size, "the baseline trains everyone at that size")
            row["relacc"][task.task] = relacc(truth[int(np.argmin(losses))], truth)
        fixed.append(row)
    return adaptive, fixed
