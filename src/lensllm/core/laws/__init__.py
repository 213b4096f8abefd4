"""Law families and the engine that fits them (pure numpy/scipy)."""

from lensllm.core.laws.families import Law, LensLLMLaw, PowerLaw, RectifiedLaw, ntk_term
from lensllm.core.laws.fit import FitResult, Prior, fit_law

__all__ = [
    "FitResult",
    "Law",
    "LensLLMLaw",
    "PowerLaw",
    "Prior",
    "RectifiedLaw",
    "fit_law",
    "ntk_term",
]
