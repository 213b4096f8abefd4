"""Compute accounting and adaptive candidate elimination (successive halving over data).

* :class:`FlopsLedger` -- every fine-tuning run actually done is charged
  ``6 x params x tokens`` (tokens = examples x tokens per example; epochs cancel when
  the reference, fine-tuning every candidate at the target size, is counted the same
  way).  The ledger's fraction is its total over that reference.
* :class:`SuccessiveHalving` -- all candidates are fine-tuned on the smallest sizes;
  after every rung a selector (default ``lensllm``) predicts each candidate's loss at
  the target with an interval and P(best); candidates that are unlikely to be the best
  are dropped, and the survivors get the next (doubled) data size.  The search stops
  when the leader's P(best) passes a threshold, when the next rung would overrun the
  FLOPs budget, or when the sizes run out.  :func:`replay` runs it on a table of
  measured curves, reading each loss as if it had just been trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lensllm.core.curves import Curve, CurveSet
from lensllm.core.selectors import Selection, Selector, make_selector
from lensllm.core.uncertainty import probability_best
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


@dataclass(frozen=True)
class HalvingSettings:
    """How the search spends compute.

    ``warmup``: sizes every candidate is trained on before the first decision (a law
    needs 3 points).  After that, each rung trains the survivors on the next size:
    candidates whose P(best) is below ``p_keep`` are dropped, and if the rung would
    cost more than its share of the remaining FLOPs budget (the remaining budget split
    evenly over the rungs left up to the largest size) only the candidates that fit are
    trained, chosen by ``fill`` (see :data:`FILL_POLICIES`) -- so the budget buys a few
    candidates at large sizes rather than many at small ones, as in successive halving.
    ``p_stop``: stop once the leader's P(best) reaches this.  ``flops_fraction``: the
    budget, as a share of fine-tuning every candidate once at the target.
    """

    warmup: int = 3
    fill: str = "first-fit"
    # Chosen by the rule in benchmarks/tune_adaptive.py (best mean RelAcc at 1 % and 3 %
    # budgets on the bundled tasks; ties to the lower FLOPs share).
    p_keep: float = 0.005
    p_stop: float = 0.9
    flops_fraction: float = 0.03

    def __post_init__(self) -> None:
        if self.warmup < 2:
            raise InputError("halving: warmup must be at least 2 sizes")
        if not 0 <= self.p_keep < 1 or not 0 < self.p_stop <= 1:
            raise InputError("halving: p_keep must be in [0, 1) and p_stop in (0, 1]")
        if self.flops_fraction <= 0:
            raise InputError("halving: flops_fraction must be > 0")
        if self.fill not in FILL_POLICIES:
            raise InputError(f"halving: fill must be one of {', '.join(FILL_POLICIES)}")


#: how a rung's FLOPs share is filled with survivors (ranked by predicted loss):
#: "prefix" trains the best-ranked that fit and stops at the first that does not;
#: "first-fit" goes down the ranking and skips any candidate too costly for what is
#: left (cheaper ones further down may still fit); "value" orders by P(best) per FLOP.
FILL_POLICIES = ("prefix", "first-fit", "value")


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


class SuccessiveHalving:
    """Successive halving over data size, ranking by extrapolated loss."""

    def __init__(self, selector: str | Selector = "lensllm",
                 settings: HalvingSettings | None = None) -> None:
        self.selector = make_selector(selector)
        self.settings = settings or HalvingSettings()
        check_adaptive_method(self.selector)

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

        def run_rung(models: list[str], size: int) -> None:
            losses = train(list(models), size)
            for model in models:
                points[model][size] = float(losses[model])
                ledger.charge(model, params[model], size)

        survivors = [c.model for c in candidates]
        warmup_cost = sum(ledger.cost(m, params[m], n) for m in survivors
                          for n in ladder[: s.warmup])
        if warmup_cost > limit:
            raise InputError(
                f"the FLOPs budget ({100 * s.flops_fraction:.3g} % of fine-tuning every "
                f"candidate at the target) is smaller than the warm-up, which trains every "
                f"candidate on the {s.warmup} smallest sizes ({100 * warmup_cost / reference:.3g}"
                " %); raise the FLOPs budget or start the ladder at a smaller size")
        for size in ladder[: s.warmup]:
            run_rung(survivors, size)
        level = len(ladder[: s.warmup])
        rungs: list[Rung] = []
        while True:
            # Every other field (zero-shot, params, NTK, weight metrics) travels along.
            curves = CurveSet(
                (replace(c, sizes=np.array(sorted(points[c.model])),
                         losses=np.array([points[c.model][n] for n in sorted(points[c.model])]))
                 for c in candidates), task=task)
            budget = max(max(p) for p in points.values())
            selection = self.selector.select(curves, budget, target, uncertainty=True)
            survivors, p_best = self._survivors(selection, survivors)
            leader = survivors[0]
            rungs.append(Rung(budget, [], list(survivors), leader, float(p_best[0]),
                              ledger.total / reference))
            next_size = ladder[level] if level < len(ladder) else None
            if len(survivors) == 1:
                reason = "one candidate left"
            elif p_best[0] >= s.p_stop:
                reason = f"leader P(best) {p_best[0]:.2f} >= {s.p_stop}"
            elif next_size is None:
                reason = "no larger size below the target"
            else:
                # The rung's share: what is left, split evenly over the rungs left.
                share = (limit - ledger.total) / (len(ladder) - level)
                trained = self._fill(survivors, p_best, {
                    m: ledger.cost(m, params[m], next_size) for m in survivors}, share)
                if len(trained) < 2:
                    # Too little for two: spend what is left on the leaders if it fits.
                    trained = survivors[:2]
                    need = sum(ledger.cost(m, params[m], next_size) for m in trained)
                    if ledger.total + need > limit:
                        reason = "the next rung would exceed the FLOPs budget"
                        return HalvingResult(leader, ledger, reference, rungs, selection,
                                             reason)
                survivors = trained
                run_rung(survivors, next_size)
                rungs[-1].trained = list(survivors)
                level += 1
                continue
            return HalvingResult(leader, ledger, reference, rungs, selection, reason)

    def _fill(self, survivors: list[str], p_best: np.ndarray, costs: dict[str, float],
              share: float) -> list[str]:
        """Which survivors (ranked best first) the rung's FLOPs share trains."""
        order = list(survivors)
        if self.settings.fill == "value":  # most P(best) per FLOP first
            value = dict(zip(survivors, p_best, strict=True))
            order.sort(key=lambda m: -value[m] / costs[m])
        trained, spend = set(), 0.0
        for model in order:
            if spend + costs[model] <= share:
                trained.add(model)
                spend += costs[model]
            elif self.settings.fill == "prefix":
                break  # never skip a better-ranked candidate for a cheaper one
        return [m for m in survivors if m in trained]

    def _survivors(self, selection: Selection, alive: list[str]
                   ) -> tuple[list[str], np.ndarray]:
        """Alive candidates by predicted loss, dropping the unlikely ones."""
        index = {m: i for i, m in enumerate(selection.models)}
        idx = sorted((index[m] for m in alive), key=lambda i: selection.predicted[i])
        model = selection.details.get("error_model")
        horizon = math.log2(selection.target / selection.budget)
        sd = model.sd_rel_at(horizon) if model is not None else math.nan
        p = probability_best(selection.predicted[idx], sd)
        if not math.isfinite(sd):  # no back-test possible yet: no basis to drop anyone
            return [selection.models[j] for j in idx], p
        chosen = [j for k, j in enumerate(idx) if k == 0 or p[k] >= self.settings.p_keep]
        p_chosen = probability_best(selection.predicted[chosen], sd)
        return [selection.models[j] for j in chosen], p_chosen


def replay(curves: CurveSet, target: int, tokens_per_example: float,
           selector: str | Selector = "lensllm",
           settings: HalvingSettings | None = None) -> HalvingResult:
    """Run the search on measured curves, reading each run's loss from the table."""
    ladder = sorted({int(n) for c in curves for n in c.sizes if n < target})

    def lookup(models: list[str], size: int) -> dict[str, float]:
        out = {}
        for model in models:
            value = curves[model].loss_at(size)
            if value is None:
                raise InputError(f"{curves.task}: model {model!r} has no measured loss at "
                                 f"size {size}; the replay needs every size of the ladder")
            out[model] = value
        return out

    return SuccessiveHalving(selector, settings).run(lookup, list(curves), ladder, target,
                                                     tokens_per_example, task=curves.task)


def fixed_budget_fraction(budget: int, target: int, sizes: Sequence[int]) -> float:
    """FLOPs share of training every candidate on every size <= budget (same for all
    models, so parameter counts cancel)."""
    return float(sum(n for n in sizes if n <= budget)) / target


def adaptive_benchmark(tasks: Sequence[CurveSet], target: int,
                       tokens_per_example: dict[str, float], flops_budgets: Sequence[float],
                       selector: str | Selector = "lensllm",
                       settings: HalvingSettings | None = None,
                       fixed_method: str | Selector = "ats",
                       fixed_budgets: Sequence[int] = ()) -> tuple[list[dict], list[dict]]:
    """Replay the adaptive search per FLOPs budget, and a fixed-budget method per budget.

    Returns (adaptive rows, fixed rows); each row has per-task RelAcc and FLOPs share.
    """
    from dataclasses import replace

    from lensllm.core.evaluation import relacc

    base = settings or HalvingSettings()
    adaptive = []
    for share in flops_budgets:
        row: dict[str, Any] = {"budget": share, "relacc": {}, "flops": {}, "chosen": {},
                               "stop": {}}
        for task in tasks:
            truth = task.losses_at(target, "the replay scores against the true loss")
            result = replay(task, target, tokens_per_example[task.task], selector,
                            replace(base, flops_fraction=share))
            row["relacc"][task.task] = relacc(truth[task.models.index(result.chosen)], truth)
            row["flops"][task.task] = result.flops_fraction
            row["chosen"][task.task] = result.chosen
            row["stop"][task.task] = result.stop_reason
        adaptive.append(row)
    fixed = []
    method = make_selector(fixed_method)
    for budget in fixed_budgets:
        row = {"ratio": f"1/{round(target / budget)}", "budget": budget, "relacc": {},
               "flops": fixed_budget_fraction(budget, target, tasks[0][0].sizes.tolist())}
        for task in tasks:
            truth = task.losses_at(target, "the replay scores against the true loss")
            chosen = method.select(task, budget, target).chosen
            row["relacc"][task.task] = relacc(truth[task.models.index(chosen)], truth)
        fixed.append(row)
    return adaptive, fixed
