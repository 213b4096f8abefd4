"""Curve and run diagnostics of the zoo study: the knee rule, Spearman with its sample
size, the Hessian bound's complexity term, and fits stopped by the fitting box."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensllm.core.diagnostics import (
    complexity_term,
    hessian_distance_measure,
    knee_size,
    local_slopes,
    negative_layers,
    spearman,
)
from lensllm.core.laws import RectifiedLaw, fit_law
from lensllm.core.laws.families import BETA_BOUNDS
from lensllm.core.laws.fit import params_at_bounds
from lensllm.errors import InputError

GRID = 16.0 * 2.0 ** np.arange(9)  # 16 ... 4096, the suite's sizes


def rectified(n: np.ndarray, d0: float, beta: float, floor: float) -> np.ndarray:
    d_l = d0**beta
    return 3.0 * d_l / (d_l + n**beta) + floor


curves = st.tuples(st.floats(2.0, 5000.0), st.floats(0.3, 1.5), st.floats(0.0, 2.0),
                   st.integers(0, 2**32 - 1))


def noisy(y: np.ndarray, seed: int) -> np.ndarray:
    return y * np.exp(0.01 * np.random.default_rng(seed).standard_normal(y.shape))


@settings(max_examples=150, deadline=None)
@given(curves, st.floats(1e-3, 1e3), st.floats(0.01, 100.0))
def test_knee_is_a_measured_size_and_ignores_the_units(curve, size_scale, loss_scale):
    d0, beta, floor, seed = curve
    y = noisy(rectified(GRID, d0, beta, floor), seed)
    knee = knee_size(GRID, y)
    if knee is None:  # noise made every local slope rise
        assert local_slopes(GRID, y).min() >= 0
        return
    assert knee in GRID[1:-1]
    # log-log slopes: scaling the losses changes none, scaling the sizes moves the knee
    assert knee_size(GRID, loss_scale * y) == knee
    assert knee_size(size_scale * GRID, y) == pytest.approx(size_scale * knee, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 2.0), st.floats(0.1, 10.0))
def test_a_pure_power_law_has_its_knee_at_the_first_local_slope(beta, scale):
    assert knee_size(GRID, scale * GRID**-beta) == GRID[1]


@settings(max_examples=100, deadline=None)
@given(st.floats(0.5, 1.2), st.integers(0, 2**32 - 1))
def test_the_knee_follows_the_pre_learned_size(beta, seed):
    """Without a floor the rectified curve is a function of n / D0: on a grid of powers
    of two, a D0 four times larger puts the knee two grid steps later."""
    long_grid = 2.0 ** np.arange(2, 20)
    knees = [knee_size(long_grid, rectified(long_grid, d0, beta, 0.0))
             for d0 in (64.0, 256.0)]
    assert knees[1] == 4 * knees[0]


def test_knee_of_a_rising_or_flat_curve_is_none():
    assert knee_size(GRID, np.linspace(1.0, 2.0, GRID.size)) is None
    assert knee_size(GRID, np.full(GRID.size, 2.0)) is None


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (([0, 16, 32], [3.0, 2.0, 1.0]), {}, "knee: sizes must be finite and > 0 (leave the "
                                         "zero-shot point out)"),
    (([16, 32, 64], [3.0, 0.0, 1.0]), {}, "knee: losses must be finite and > 0"),
    (([16, 16, 64], [3.0, 2.0, 1.0]), {}, "knee: each size may appear once"),
    (([16, 32], [3.0, 2.0]), {}, "knee: need at least 3 sizes, got 2"),
    (([16, 32, 64], [3.0, 2.0]), {}, "knee: sizes and losses differ in length"),
    (([16, 32, 64], [3.0, 2.0, 1.0]), {"fraction": 1.0},
     "knee: fraction must be in (0, 1), got 1.0"),
    (([16, 32, 64], [3.0, 2.0, 1.0]), {"window": 4},
     "knee: window must be an odd number of sizes >= 3, got 4"),
])
def test_knee_bad_inputs(args, kwargs, message):
    with pytest.raises(InputError) as error:
        knee_size(*args, **kwargs)
    assert str(error.value) == message


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000)), min_size=3,
                max_size=30))
def test_spearman_sees_only_ranks(pairs):
    x, y = (np.array(v, dtype=float) for v in zip(*pairs, strict=True))
    base = spearman(x, y)
    # strictly increasing transforms (exactly so for these whole numbers)
    moved = spearman(np.exp(x / 100.0), 2.0 * y + 1.0)
    assert base.n == moved.n == len(pairs)
    if math.isnan(base.rho):
        assert math.isnan(moved.rho)
    else:
        assert moved.rho == pytest.approx(base.rho, abs=1e-9)
        assert -1.0 - 1e-12 <= base.rho <= 1.0 + 1e-12


def test_spearman_drops_missing_pairs_and_says_how_many_it_used():
    c = spearman([1, 2, None, 4, 5, math.nan], [1, 3, 2, 4, 9, 1])
    assert (c.rho, c.n) == (1.0, 4) and c.p < 0.05
    assert spearman([1, 2, 3], [1, 1, 1]).n == 3 and math.isnan(spearman([1, 2, 3],
                                                                         [1, 1, 1]).rho)
    short = spearman([1, 2], [2, 1])
    assert short.n == 2 and math.isnan(short.rho) and math.isnan(short.p)
    with pytest.raises(InputError, match=r"^spearman: 2 values against 3$"):
        spearman([1, 2], [1, 2, 3])


distances = st.lists(st.floats(-1.0, 1e4), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(distances, st.floats(1.0, 1e6), st.floats(0.01, 100.0))
def test_complexity_term_scaling(d, n, c):
    term = complexity_term(d, n)
    assert term >= 0
    # n^-1/2 in the sample size, linear in the Hessian-weighted norm sqrt(d)
    assert complexity_term(d, 4 * n) == pytest.approx(term / 2, rel=1e-9, abs=1e-300)
    assert complexity_term([c * c * v for v in d], n) == pytest.approx(c * term, rel=1e-9)
    # Ju et al.'s shape: sqrt(S / n) = sqrt(term / sqrt(n))
    assert complexity_term(d, n, "ju2022") == pytest.approx(math.sqrt(term / math.sqrt(n)),
                                                            rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(distances, st.floats(0.0, 1e4))
def test_negative_layers_count_as_zero_and_layers_only_add(d, extra):
    clipped = [max(v, 0.0) for v in d]
    assert hessian_distance_measure(d) == hessian_distance_measure(clipped)
    assert negative_layers(d) == sum(v < 0 for v in d)
    # a layer never lowers the measure (up to the rounding of a longer sum)
    before = hessian_distance_measure(d)
    assert hessian_distance_measure([*d, extra]) >= before * (1 - 1e-12)


def test_complexity_term_reads_per_layer_mappings_and_rejects_bad_input():
    layers = {"transformer.h.0": 4.0, "transformer.h.1": 9.0, "other": -1.0}
    assert complexity_term(layers, 25) == pytest.approx((2 + 3 + 0) / 5)
    assert negative_layers(layers) == 1
    for args, message in [
        (([1.0], 10, "pac"), "unknown complexity form 'pac'; use sum-sqrt or ju2022"),
        (([1.0], 0), "complexity term: the sample size must be > 0, got 0"),
        (([],), "hessian distances must be finite numbers, at least one layer"),
        (([math.nan],), "hessian distances must be finite numbers, at least one layer"),
        ((["a"],), "hessian distances must be numbers, one per layer"),
    ]:
        with pytest.raises(InputError) as error:
            complexity_term(*args) if len(args) > 1 else hessian_distance_measure(*args)
        assert str(error.value) == message


def test_params_at_bounds_names_what_the_box_stopped():
    sizes = np.r_[0, GRID]
    fit = fit_law(RectifiedLaw(), sizes, rectified(sizes, 200.0, 0.8, 1.0))
    assert params_at_bounds(fit) == ()
    pinned = fit.theta.copy()
    pinned[2] = BETA_BOUNDS[0]
    assert params_at_bounds(replace(fit, theta=pinned)) == ("beta",)
    pinned[1] = math.log(float(fit.losses.max()))  # E as high as the highest loss
    assert params_at_bounds(replace(fit, theta=pinned)) == ("log_e", "beta")
