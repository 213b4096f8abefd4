"""The decision in words: how sure a ranking is, and what more compute would settle it.

The words come from the numbers the ranking already states -- P(best), the intervals,
ties -- so the sentence and the table can never disagree:

* **clear winner** -- the leader's P(best) reaches :data:`CLEAR`;
* **near tie between A and B** -- the fewest leading candidates whose P(best) adds up
  to :data:`CLEAR`;
* **tie** -- equal scores (identical curves): the pick is arbitrary;
* **not enough data** -- no interval could be back-tested (too few sizes), so P(best)
  knows nothing about the order.

Intervals and P(best) measure different errors (see :mod:`lensllm.core.uncertainty`):
an interval holds the whole prediction error, including an error that moves every
candidate the same way; P(best) counts only errors relative to the other candidates.
A candidate whose interval overlaps the leader's can therefore have a P(best) near 0;
the report flags such overlaps and says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lensllm.core.search import AdaptiveSettings, training_flops

if TYPE_CHECKING:
    from lensllm.core.selectors import Selection

#: the P(best) that makes a winner clear: the level at which the adaptive search stops
CLEAR = AdaptiveSettings.p_stop


@dataclass(frozen=True)
class Decision:
    """What a ranking says, in words; ``kind`` is one of clear, near-tie, tie,
    not-enough-data, single, ranking-only."""

    kind: str
    contenders: list[str]
    headline: str
    #: what more compute would settle it (empty when nothing would change the choice)
    next_step: str
    #: candidates whose interval overlaps the leader's
    overlapping: list[str] = field(default_factory=list)

    def text(self) -> str:
        return " ".join(t for t in (self.headline, self.next_step) if t)


def interval_overlaps(selection: Selection) -> list[bool]:
    """Per model: does its interval overlap the leader's (False for the leader itself
    and where there is no interval)."""
    lower, upper = selection.lower, selection.upper
    if lower is None or upper is None:
        return [False] * len(selection.models)
    lead = int(selection.order[0])
    out = []
    for i in range(len(selection.models)):
        bounds = (lower[i], upper[i], lower[lead], upper[lead])
        out.append(i != lead and all(math.isfinite(b) for b in bounds)
                   and bool(lower[i] <= upper[lead] and upper[i] >= lower[lead]))
    return out


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def decide(selection: Selection, params: dict[str, float] | None = None,
           tokens_per_example: dict[str, float] | None = None,
           reference_flops: float | None = None) -> Decision:
    """The decision behind ``selection``; with the candidates' parameter counts and
    tokens per example, the next step is priced in FLOPs (6 x params x tokens, one pass,
    like the compute ledger) and, with ``reference_flops``, as a share of it."""
    models, order = selection.models, [int(i) for i in selection.order]
    leader = models[order[0]]
    if len(models) == 1:
        return Decision("single", [leader], f"Only one candidate, {leader}: nothing to "
                        "compare, so its P(best) of 1 says nothing.", "")
    tied = selection.tied
    if len(tied) > 1:
        return Decision("tie", tied, f"Tie between {_names(tied)}: equal scores, so the "
                        f"pick of {leader} is arbitrary.", "Any of them is as good a choice "
                        "as the data can tell; different curves (more sizes) would be needed "
                        "to separate them.")
    p, lower = selection.p_best, selection.lower
    if p is None or selection.predicted is None:
        return Decision("ranking-only", [leader], f"{leader} ranks first by the "
                        f"{selection.method} score; this method states no interval or "
                        "P(best), so it cannot say how sure it is.", "")
    overlapping = [models[i] for i, o in enumerate(interval_overlaps(selection)) if o]
    next_size = 2 * selection.budget
    if lower is None or not np.isfinite(lower).any():
        cost = _cost(models, next_size, params, tokens_per_example, reference_flops)
        return Decision("not-enough-data", models, f"Not enough data to say how sure: "
                        f"{leader} is predicted lowest, but with the sizes measured so far "
                        "nothing could be back-tested, so there is no interval and P(best) "
                        "is uniform.", f"Fine-tuning every candidate on one more size "
                        f"({next_size:,} examples){cost} would let the predictions be "
                        "checked.", overlapping)
    share, contenders = 0.0, []
    for i in order:
        contenders.append(models[i])
        share += float(p[i])
        if share >= CLEAR:
            break
    if len(contenders) == 1:
        headline = f"Clear winner: {leader} (P(best) {float(p[order[0]]):.2f})."
        if overlapping:
            headline += (f" Its {_level(selection)} interval overlaps that of "
                         f"{_names(overlapping)}: the intervals include an error shared by "
                         "every candidate (the law off the same way for all), which does not "
                         "change the order; P(best) counts only errors relative to the "
                         "other candidates.")
        return Decision("clear", contenders, headline, "", overlapping)
    shown = " / ".join(f"{float(p[models.index(m)]):.2f}" for m in contenders)
    losses = " vs ".join(f"{float(selection.predicted[models.index(m)]):.4g}"
                         for m in contenders)
    headline = (f"Near tie between {_names(contenders)} (P(best) {shown}; predicted loss "
                f"{losses}); {leader} leads.")
    return Decision("near-tie", contenders, headline,
                    _settle(selection, contenders, params, tokens_per_example,
                            reference_flops), overlapping)


def _level(selection: Selection) -> str:
    return f"{round(100 * selection.details.get('level', 0.9))} %"


def _cost(models: list[str], size: int, params: dict[str, float] | None,
          tokens: dict[str, float] | None, reference: float | None) -> str:
    if not params or not tokens or any(m not in params or m not in tokens for m in models):
        return ""
    flops = sum(training_flops(params[m], size, tokens[m]) for m in models)
    share = f", {100 * flops / reference:.1f} % of fine-tuning every candidate at the " \
            "target" if reference else ""
    return f", about {flops:.2e} FLOPs{share}"


def _settle(selection: Selection, contenders: list[str], params: dict[str, float] | None,
            tokens: dict[str, float] | None, reference: float | None) -> str:
    """Fine-tune the contenders one size further: the horizon shrinks by a doubling, and
    the back-tested error model says how sure the order would then be if the
    predictions held."""
    from lensllm.core.uncertainty import PBEST_LEVEL, probability_best

    size = 2 * selection.budget
    cost = _cost(contenders, min(size, selection.target), params, tokens, reference)
    if size >= selection.target:
        return (f"Fine-tuning {_names(contenders)} at the target "
                f"({selection.target:,} examples){cost} settles it directly.")
    text = (f"Fine-tuning {_names(contenders)} on {size:,} examples (twice the budget)"
            f"{cost} would shorten the extrapolation by one doubling")
    model = selection.details.get("error_model")
    if model is not None:
        horizon = math.log2(selection.target / size)
        index = [selection.models.index(m) for m in contenders]
        p = probability_best(np.asarray(selection.predicted)[index],
                             model.sd_rel_at(horizon, PBEST_LEVEL))
        if np.isfinite(p).all():
            text += (f"; if the predictions held, {contenders[0]}'s P(best) among them would "
                     f"be {float(p[0]):.2f}")
    return text + "."
