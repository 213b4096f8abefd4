"""The bundled public benchmark: 30 LLMs x 3 tasks x 15 fine-tuning data sizes.

Measured by Lin et al. (ICML 2024, arXiv:2402.02314) and used by both the rectified
scaling-law paper and LensLLM (Zeng et al., ICML 2025); Apache-2.0, see data/NOTICE.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lensllm.core.curves import CurveSet
from lensllm.core.formats import parse_curves
from lensllm.errors import InputError

TASKS = ("flan", "wmt19", "gigaword")
TARGET = 1_638_400
BUDGETS = (204_800, 102_400, 51_200, 25_600, 12_800, 6_400, 3_200)
# Average example length in tokens (Lin et al.), for the FLOPs of fine-tuning.
TOKENS_PER_EXAMPLE = {"flan": 35, "wmt19": 72, "gigaword": 44}
CITATION = (
    "Lin et al., Selecting Large Language Model to Fine-tune via Rectified Scaling Law, "
    "ICML 2024 (arXiv:2402.02314); data under Apache-2.0"
)


@cache
def _text() -> str:
    return resources.files("lensllm").joinpath("data/benchmark.csv").read_text("utf-8")


def load_benchmark(task: str) -> CurveSet:
    """The bundled curves of one task (``flan``, ``wmt19`` or ``gigaword``)."""
    key = task.strip().lower()
    if key not in TASKS:
        raise InputError(f"unknown benchmark task {task!r}; choose from {', '.join(TASKS)}")
    return parse_curves(_text(), source="benchmark.csv", fmt="long", task=key)


def ratio_label(budget: int, target: int) -> str:
    """``"1/8"`` for budget = target / 8; a decimal ratio when it is not a power fraction."""
    ratio = target / budget
    return f"1/{round(ratio)}" if abs(ratio - round(ratio)) < 1e-9 else f"1/{ratio:.3g}"
