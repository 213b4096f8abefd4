"""Synthetic power-law tasks for the numerical tests (seeded)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lensllm.core.curves import Curve, CurveSet


def power_task(sizes: Sequence[int], n_models: int, noise: float, seed: int = 0,
               task: str = "synthetic") -> CurveSet:
    """``n_models`` curves ``b D^-beta`` with multiplicative noise at ``sizes``."""
    sizes = np.asarray(sizes)
    rng = np.random.default_rng(seed)
    curves = []
    for i in range(n_models):
        b, beta = rng.uniform(3, 6), rng.uniform(0.05, 0.2)
        losses = b * sizes.astype(float) ** -beta * np.exp(noise * rng.standard_normal(
            len(sizes)))
        curves.append(Curve(f"m{i}", sizes, losses, zero_shot=b * 1.2,
                            params=float(10 ** rng.uniform(7, 9))))
    return CurveSet(curves, task=task)
