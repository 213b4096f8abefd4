"""Selectors that need no curve fit: zero-shot loss, loss at the budget, model size."""

from __future__ import annotations

import math

import numpy as np

from lensllm.curves import CurveSet
from lensllm.errors import InputError
from lensllm.selectors.base import Selection, Selector


class ZeroShot(Selector):
    """Pick the model with the lowest loss before any fine-tuning."""

    name = "zeroshot"
    score_label = "zero-shot loss"
    needs_zero_shot = True

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        return self._selection(curves, budget, target, [c.zero_shot for c in curves])


class SubsetLoss(Selector):
    """Pick the model with the lowest loss after fine-tuning on the budget's data
    ("SubTuning" in the papers).  All models are compared at the largest size <= budget
    that every one of them has measured."""

    name = "subset-loss"
    score_label = "loss at budget"
    min_points = 1

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

    name = "model-size"
    score_label = "log(params)"
    needs_params = True
    higher_is_better = True

    def _select(self, curves: CurveSet, budget: int, target: int) -> Selection:
        scores = np.array([math.log(c.params) for c in curves])
        return self._selection(curves, budget, target, scores)
