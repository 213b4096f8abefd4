"""Selectors that need no curve fit: zero-shot loss, loss at the budget, model size."""

from __future__ import annotations

import math

import numpy as np

from lensllm.core.curves import CurveSet
from lensllm.core.selectors.base import Selection, Selector
from lensllm.core.selectors.settings import Setting, choice
from lensllm.errors import InputError


class ZeroShot(Selector):
    """Pick the model with the lowest loss before any fine-tuning."""

    predicts_loss = False
    name = "zeroshot"
    score_label = "zero-shot loss"
    needs_zero_shot = True

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        return self._selection(curves, budget, target, [c.zero_shot for c in curves])


class SubsetLoss(Selector):
    """Pick the model with the lowest loss after fine-tuning on the budget's data
    ("SubTuning" in the papers).  All models are compared at the largest size <= budget
    that every one of them has measured."""

    predicts_loss = False
    name = "subset-loss"
    score_label = "loss at budget"
    required_sizes = 1

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        shared = set(curves[0].sizes.tolist())
        for curve in curves:
            shared &= set(curve.sizes.tolist())
        if not shared:
            raise InputError(
                f"{curves.task}: the models share no measured size <= budget {budget}; "
                "subset-loss compares every model at the same size"
            )
        size = max(shared)
        scores = curves.losses_at(size, "subset-loss compares every model at one size")
        return self._selection(curves, budget, target, scores, details={"size": size})


class ModelSize(Selector):
    """Pick the largest model.  The score is log(parameters), as in the papers, so its
    PearCorr is negative when bigger models reach lower loss."""

    predicts_loss = False
    name = "model-size"
    score_label = "log(params)"
    needs_params = True
    higher_is_better = True

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        scores = np.array([math.log(c.params) for c in curves])
        return self._selection(curves, budget, target, scores)


class NLPMetrics(Selector):
    """Rank by a heavy-tailed weight-spectrum metric of the pretrained weights, computed
    by the ``weightwatcher`` package (the NLPmetrics baseline of the LensLLM paper; no
    training needed): ``pl_alpha`` (default) or ``e_tpl_lambda``, the mean over layers of
    the power-law exponent / the E_TPL truncation parameter.  Lower is taken as better
    (heavier tails: better-trained layers).  With the ``nlpmetrics`` extra installed,
    ``lensllm run`` measures ``pl_alpha`` for this method and for ``--verify``, and
    ``e_tpl_lambda`` (minutes of fitting per model) when the method ranks by it; curve
    files carry them under ``metrics``."""

    predicts_loss = False
    name = "nlpmetrics"
    score_label = "weight-spectrum metric"
    settings = (Setting("metric", choice("pl_alpha", "e_tpl_lambda"), "pl_alpha",
                        "the weight-spectrum metric to rank by (lower is better)"),)

    def _check_curve(self, curve, budget: int, task: str) -> None:
        value = (curve.metrics or {}).get(self.metric)
        if value is None or not math.isfinite(value):
            raise InputError(
                f"{task}: model {curve.model!r} has no {self.metric} measurement; the "
                "nlpmetrics method needs weight-spectrum metrics, which lensllm run measures "
                f"with method: {self.label} (or --verify, for pl_alpha) when the nlpmetrics "
                "extra (weightwatcher) is installed")

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        return self._selection(curves, budget, target,
                               [c.metrics[self.metric] for c in curves])
