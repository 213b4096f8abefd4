"""benchmarks/tune_intervals.py: the widths of the calibrations --alternatives scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark_scripts import load_script

TUNE = load_script("tune_intervals")


def _cell(growth: float) -> dict:
    # 9 back-test errors per length: their 90 % conformal quantile (the ceil(10 x 0.9)-th
    # smallest) is the largest one
    base = np.linspace(0.001, 0.01, 9)
    return {"H": 6.0, "e": np.zeros(3), "bt": {h: base * h**growth for h in (1, 2, 3, 4)}}


@pytest.mark.parametrize("growth, floor, used", [(1.2, 0.0, 1.2), (1.2, 1.9, 1.9),
                                                 (0.4, 0.5, 0.5)])
def test_fitted_growth_extrapolates_the_longest_back_test_at_its_own_slope(
        growth: float, floor: float, used: float) -> None:
    cell = _cell(growth)
    q_longest = 0.01 * 4**growth
    width = TUNE._width("fitted growth", cell, floor, 1.0)
    assert width == pytest.approx(q_longest * (6.0 / 4) ** used, rel=1e-9)
    # with the floor binding, it is the "longest" calibration with that exponent
    if floor > growth:
        assert width == pytest.approx(TUNE._width("longest", cell, floor, 1.0), rel=1e-9)


def test_fitted_growth_needs_two_back_test_lengths() -> None:
    cell = {"H": 5.0, "e": np.zeros(1), "bt": {1: np.full(9, 0.01)}}
    assert math.isnan(TUNE._width("fitted growth", cell, 1.0, 1.0))


def test_method_spread_is_the_range_of_the_law_fits_scaled_by_the_horizon() -> None:
    from lensllm.core.benchmark import TARGET, load_benchmark
    from lensllm.core.selectors import make_selector

    curves = load_benchmark("gigaword")
    request = (curves, TARGET // 64, TARGET)
    spread = TUNE.law_spreads([request])[0]
    logs = np.array([np.log(make_selector(m).select(*request).predicted)
                     for m in TUNE.LAW_METHODS])
    np.testing.assert_allclose(spread, logs.max(0) - logs.min(0))
    assert spread.shape == (len(curves),) and np.all(spread >= 0)
    cell = {"H": 6.0, "spread": spread, "e": np.zeros(len(curves)), "bt": {}}
    np.testing.assert_allclose(TUNE._width("method spread", cell, 0.5, 1.5),
                               0.5 * spread * 2.0**1.5)


def test_method_spread_leaves_out_a_method_that_cannot_serve_the_cell(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lensllm.core.benchmark import TARGET, load_benchmark

    curves = load_benchmark("flan")
    request = (curves, 800, TARGET)
    expected = TUNE.law_spreads([request])[0]
    # nlpmetrics cannot serve the benchmark (no weight-spectrum metrics): left out
    monkeypatch.setattr(TUNE, "LAW_METHODS", (*TUNE.LAW_METHODS, "nlpmetrics"))
    np.testing.assert_allclose(TUNE.law_spreads([request])[0], expected)
    # two sizes under the budget: no law method serves it, so there is no spread
    assert np.all(np.isnan(TUNE.law_spreads([(curves, 400, TARGET)])[0]))
