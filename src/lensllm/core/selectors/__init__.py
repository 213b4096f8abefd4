"""Selectors: turn the curves seen under a budget into a ranking of the candidates.

``make_selector("ats", k=4)`` or ``make_selector("ats[k=4,delta=2]")`` builds one by
name; :data:`SELECTORS` lists the names (``subtuning`` is an alias of
``subset-loss``).  Each class declares its settings in ``settings``
(:mod:`lensllm.core.selectors.settings`); ``get_params`` / ``set_params`` read and
change them.
"""

from __future__ import annotations

from lensllm.core.selectors.ats import AtS
from lensllm.core.selectors.base import Selection, Selector, check_budget
from lensllm.core.selectors.baselines import ModelSize, NLPMetrics, SubsetLoss, ZeroShot
from lensllm.core.selectors.lawfit import LensLLMPaperFit, RectifiedFit, VanillaFit
from lensllm.core.selectors.pooled import PooledLensLLM
from lensllm.core.selectors.registry import (
    ALIASES,
    DEFAULT_METHODS,
    SELECTORS,
    make_selector,
    parse_spec,
    split_methods,
)
from lensllm.core.selectors.settings import Setting

__all__ = [
    "ALIASES",
    "DEFAULT_METHODS",
    "SELECTORS",
    "AtS",
    "LensLLMPaperFit",
    "ModelSize",
    "NLPMetrics",
    "PooledLensLLM",
    "RectifiedFit",
    "Selection",
    "Selector",
    "Setting",
    "SubsetLoss",
    "VanillaFit",
    "ZeroShot",
    "check_budget",
    "make_selector",
    "parse_spec",
    "split_methods",
]
