"""lensllm: pick the LLM to fine-tune from small-subset fine-tuning curves.

Python API::

    import lensllm
    curves = lensllm.load_curves("flan.csv")            # or lensllm.load_benchmark("flan")
    choice = lensllm.select(curves, method="lensllm", budget=25_600, target=1_638_400)
    choice.chosen, choice.to_frame()
    table = lensllm.evaluate(curves, methods=["ats", "lensllm"], target=1_638_400)
    table.to_frame()
"""

from __future__ import annotations

import warnings

from lensllm.core.benchmark import load_benchmark
from lensllm.core.curves import Curve, CurveSet, NTKSpectrum
from lensllm.core.evaluation import Evaluation, evaluate
from lensllm.core.formats import load_curves
from lensllm.core.selectors import Selection, Selector, make_selector
from lensllm.errors import InputError, LensLLMError, RankingWarning

__version__ = "0.1.0"


def select(curves: CurveSet, method: str | Selector = "lensllm", *, budget: int,
           target: int, uncertainty: bool = True, level: float = 0.9,
           **options) -> Selection:
    """Rank the candidates of ``curves`` by what ``method`` predicts for ``target``,
    using only the zero-shot loss and the losses at sizes <= ``budget``.

    For predicting methods the selection also carries a ``level`` interval on each
    predicted loss (``lower``, ``upper``) and P(best) (``p_best``), from back-testing.
    A ranking weaker than it looks (one candidate, a tie, losses rising with data) also
    issues a :class:`RankingWarning` per reason (``selection.warnings`` lists them).
    """
    selection = make_selector(method, **options).select(
        curves, int(budget), int(target), uncertainty=uncertainty, level=level)
    for message in selection.warnings:
        warnings.warn(message, RankingWarning, stacklevel=2)
    return selection


__all__ = [
    "Curve",
    "CurveSet",
    "Evaluation",
    "InputError",
    "LensLLMError",
    "NTKSpectrum",
    "RankingWarning",
    "Selection",
    "Selector",
    "evaluate",
    "load_benchmark",
    "load_curves",
    "make_selector",
    "select",
]
