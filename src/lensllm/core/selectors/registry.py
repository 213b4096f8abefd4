"""Selectors by name: ``make_selector("ats[k=4,delta=2]")`` and the method lists.

A spec is a name (or alias) with optional settings in brackets, ``key=value`` separated
by commas; a tuple value is written ``(a,b)``.  The settings are the class's declared
:attr:`Selector.settings`, validated by its constructor.
"""

from __future__ import annotations

import re
from typing import Any

from lensllm.core.selectors.ats import AtS
from lensllm.core.selectors.base import Selector
from lensllm.core.selectors.baselines import ModelSize, NLPMetrics, SubsetLoss, ZeroShot
from lensllm.core.selectors.lawfit import LensLLMPaperFit, RectifiedFit, VanillaFit
from lensllm.core.selectors.pooled import PooledLensLLM
from lensllm.core.selectors.settings import parse_value, split_outside
from lensllm.errors import InputError

SELECTORS: dict[str, type[Selector]] = {
    "zeroshot": ZeroShot,
    "subset-loss": SubsetLoss,
    "model-size": ModelSize,
    "vanilla": VanillaFit,
    "rectified": RectifiedFit,
    "ats": AtS,
    "lensllm": PooledLensLLM,
    "lensllm-paper": LensLLMPaperFit,
    "nlpmetrics": NLPMetrics,
}
ALIASES = {"subtuning": "subset-loss", "zero-shot": "zeroshot", "modelsize": "model-size"}
DEFAULT_METHODS = ("zeroshot", "subset-loss", "model-size", "vanilla", "rectified", "ats",
                   "lensllm")

_SPEC = re.compile(r"^\s*([A-Za-z][\w-]*)\s*(?:\[(.*)\])?\s*$")


def parse_spec(spec: str) -> tuple[type[Selector], dict[str, Any]]:
    """The selector class and the settings written in a ``name[key=value,...]`` spec."""
    match = _SPEC.match(spec or "")
    if not match:
        raise InputError(f"cannot read method {spec!r}; write a name like 'ats' or 'ats[k=4]'")
    name = match.group(1).lower()
    name = ALIASES.get(name, name)
    if name not in SELECTORS:
        raise InputError(f"unknown method {match.group(1)!r}; choose from "
                         + ", ".join([*SELECTORS, *ALIASES]))
    options: dict[str, Any] = {}
    if match.group(2):
        for item in split_outside(match.group(2), "()"):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InputError(f"method {spec!r}: options are written key=value")
            options[key.strip().replace("-", "_")] = parse_value(value)
    return SELECTORS[name], options


def make_selector(spec: str | Selector, **options: Any) -> Selector:
    """A selector from a name, a ``name[key=value,...]`` spec, or a ready instance
    (``options`` then set on a copy)."""
    if isinstance(spec, Selector):
        if not options:
            return spec
        import copy

        return copy.copy(spec).set_params(**options)
    cls, written = parse_spec(spec)
    return cls(**{**options, **written})  # the spec's own settings win


def split_methods(text: str) -> list[str]:
    """Split 'a,b[k=1,d=2],c' on the commas outside brackets."""
    methods = [p.strip() for p in split_outside(text, "[]") if p.strip()]
    if not methods:
        raise InputError("no methods given")
    return methods
