"""Selectors: turn the curves seen under a budget into a ranking of the candidates.

``make_selector("ats", k=4)`` or ``make_selector("ats[k=4,delta=2]")`` builds one by
name; :data:`SELECTORS` lists the names (``subtuning`` is an alias of
``subset-loss``).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from lensllm.core.selectors.ats import AtS
from lensllm.core.selectors.base import Selection, Selector, check_budget
from lensllm.core.selectors.baselines import ModelSize, NLPMetrics, SubsetLoss, ZeroShot
from lensllm.core.selectors.lawfit import LensLLMPaperFit, RectifiedFit, VanillaFit
from lensllm.core.selectors.pooled import PooledLensLLM
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


def _coerce(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def make_selector(spec: str | Selector, **options: Any) -> Selector:
    """A selector from a name, a ``name[key=value,...]`` spec, or a ready instance."""
    if isinstance(spec, Selector):
        return spec
    match = _SPEC.match(spec or "")
    if not match:
        raise InputError(f"cannot read method {spec!r}; write a name like 'ats' or 'ats[k=4]'")
    name = match.group(1).lower()
    name = ALIASES.get(name, name)
    if name not in SELECTORS:
        raise InputError(f"unknown method {match.group(1)!r}; choose from "
                         + ", ".join([*SELECTORS, *ALIASES]))
    if match.group(2):
        for item in match.group(2).split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InputError(f"method {spec!r}: options are written key=value")
            options[key.strip().replace("-", "_")] = _coerce(value.strip())
    cls = SELECTORS[name]
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(
            f"method {name!r} has no option {', '.join(unknown)}; "
            + (f"its options are {', '.join(allowed)}" if allowed else "it takes no options")
        )
    selector = cls(**options)
    if options:
        shown = ",".join(f"{k}={v}" for k, v in options.items())
        selector._label = f"{name}[{shown}]"
    return selector


def split_methods(text: str) -> list[str]:
    """Split 'a,b[k=1,d=2],c' on the commas outside brackets."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    methods = [p.strip() for p in parts if p.strip()]
    if not methods:
        raise InputError("no methods given")
    return methods


__all__ = [
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
    "SubsetLoss",
    "VanillaFit",
    "ZeroShot",
    "check_budget",
    "make_selector",
    "split_methods",
]
