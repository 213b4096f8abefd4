"""The law families and the fitting engine (pure numpy/scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import least_squares

from lensllm.core.benchmark import BUDGETS, TARGET, TASKS, load_benchmark
from lensllm.core.curves import NTKSpectrum
from lensllm.core.laws import LensLLMLaw, PowerLaw, Prior, RectifiedLaw, fit_law, ntk_term
from lensllm.core.laws.fit import E_FLOOR, LOG_B_BOUNDS, fit_curves, project_linear, robust_rho
from lensllm.core.selectors.lawfit import fit_points
from lensllm.errors import InputError

SIZES = np.r_[0, 200 * 2.0 ** np.arange(14)]  # zero-shot + the benchmark's sizes
unit = st.floats(0.0, 1.0)
seeds = st.integers(0, 2**32 - 1)


def lerp(lo: float, hi: float, u: float) -> float:
    return lo + (hi - lo) * u


def noisy(y: np.ndarray, seed: int, level: float = 0.01) -> np.ndarray:
    return y * np.exp(level * np.random.default_rng(seed).standard_normal(y.shape))


def assert_recovered(fit, theta, noise: float = 0.01, z: float = 5.0) -> None:
    """Every internal parameter within z standard errors of the truth.

    Standard errors come from the Jacobian at the fit (Gauss-Newton covariance with the
    known noise level), so the test is as strict as the data allow: tight where a
    parameter is well determined, lenient only where the curve cannot pin it down.
    """
    jac = fit.jacobian
    cov = noise**2 * np.linalg.pinv(jac.T @ jac)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    err = np.abs(fit.theta - np.asarray(theta))
    assert np.all(err <= z * se + 1e-3), (err, se)


def spectrum_with_transition(beta: float, log_transition: float, steps: float) -> NTKSpectrum:
    """An NTK spectrum whose F(steps)^(1/β) -- the size where the law bends -- is given."""
    lam = np.geomspace(1e-3, 10.0, 16)
    a = np.linspace(1.0, 0.1, 16)
    f = float(ntk_term(lam, a, 0.01, steps))
    return NTKSpectrum(lam, a * math.exp(beta * log_transition) / f, 0.01, steps=steps)


# ------------------------------------------------------------------ exact recovery, no noise

@pytest.mark.parametrize("law, theta", [
    (PowerLaw(), [math.log(40.0), math.log(1.2), 0.45]),
    (RectifiedLaw(), [math.log(2.0 * 3000**0.6), math.log(1.1), 0.6, math.log(3000.0)]),
])
def test_noise_free_curves_are_fitted_exactly(law, theta):
    sizes = SIZES if law.uses_zero_shot else SIZES[1:]
    y = law.predict(sizes, np.array(theta))
    fit = fit_law(law, sizes, y)
    np.testing.assert_allclose(fit.theta, theta, rtol=1e-4, atol=1e-4)
    assert fit.rmse_log < 1e-8
    assert fit.starts_agree


def test_noise_free_lensllm_fit_t_recovers_t():
    spec = spectrum_with_transition(0.5, math.log(5000.0), steps=120.0)
    law = LensLLMLaw(ntk=spec, mode="fit-t")
    theta = np.array([math.log(2.0 * law.f_value(np.array([0.5, math.log(120.0)]))),
                      math.log(0.9), 0.5, math.log(120.0)])
    fit = fit_law(law, SIZES, law.predict(SIZES, theta))
    assert fit.params["t"] == pytest.approx(120.0, rel=1e-3)
    assert fit.params["beta"] == pytest.approx(0.5, rel=1e-4)


# ------------------------------------------------- property tests: 1 % multiplicative noise

@settings(max_examples=60, deadline=None)
@given(unit, unit, unit, unit, seeds)
def test_rectified_law_recovers_parameters(u_beta, u_d0, u_e, u_gap, seed):
    beta, d0 = lerp(0.3, 1.0, u_beta), math.exp(lerp(math.log(1e3), math.log(1e4), u_d0))
    e, gap = lerp(0.5, 2.0, u_e), lerp(1.0, 3.0, u_gap)
    theta = np.array([math.log(gap * d0**beta), math.log(e), beta, math.log(d0)])
    law = RectifiedLaw()
    truth = law.predict(SIZES, theta)
    fit = fit_law(law, SIZES, noisy(truth, seed))
    assert_recovered(fit, theta)
    assert fit.predict(SIZES[-1]) == pytest.approx(truth[-1], rel=0.03)


@settings(max_examples=60, deadline=None)
@given(unit, unit, unit, seeds)
def test_power_law_recovers_parameters(u_beta, u_e, u_b, seed):
    beta, e = lerp(0.3, 0.8, u_beta), lerp(0.5, 2.0, u_e)
    b = lerp(1.0, 3.0, u_b) * 200**beta  # the power term is 1-3x the floor at D = 200
    law = PowerLaw()
    sizes = SIZES[1:]
    theta = np.array([math.log(b), math.log(e), beta])
    fit = fit_law(law, sizes, noisy(law.predict(sizes, theta), seed))
    assert_recovered(fit, theta)


@settings(max_examples=30, deadline=None)
@given(unit, unit, unit, unit, unit, seeds, st.sampled_from(["measured", "fit-t"]))
def test_lensllm_law_recovers_parameters(u_beta, u_tr, u_e, u_gap, u_t, seed, mode):
    beta, e, gap = lerp(0.3, 1.0, u_beta), lerp(0.5, 2.0, u_e), lerp(1.0, 3.0, u_gap)
    steps = lerp(10.0, 500.0, u_t)
    spec = spectrum_with_transition(beta, lerp(math.log(1e3), math.log(1e4), u_tr), steps)
    law = LensLLMLaw(ntk=spec, mode=mode)
    f = law.f_value(np.array([beta, math.log(steps)]))
    theta = [math.log(gap * f), math.log(e), beta] + ([math.log(steps)] if mode == "fit-t"
                                                       else [])
    fit = fit_law(law, SIZES, noisy(law.predict(SIZES, np.array(theta)), seed))
    assert_recovered(fit, theta)
    if mode == "measured":  # F is known exactly from the spectrum and t
        assert fit.params["F"] == pytest.approx(f, rel=1e-12)


@settings(max_examples=15, deadline=None)
@given(unit, unit, seeds)
def test_fitting_is_deterministic(u_beta, u_d0, seed):
    theta = np.array([math.log(5.0 * 2000**0.5), 0.0, lerp(0.3, 0.9, u_beta),
                      lerp(math.log(500), math.log(5e4), u_d0)])
    y = noisy(RectifiedLaw().predict(SIZES, theta), seed)
    first = fit_law(RectifiedLaw(), SIZES, y)
    second = fit_law(RectifiedLaw(), SIZES, y)
    np.testing.assert_array_equal(first.theta, second.theta)


def test_batched_fit_equals_single_fits():
    rng = np.random.default_rng(3)
    curves = []
    for _ in range(6):
        theta = np.array([math.log(3 * 2000**0.5), math.log(rng.uniform(0.5, 2)),
                          rng.uniform(0.3, 0.9), math.log(rng.uniform(500, 5e4))])
        n = rng.integers(6, 15)
        curves.append((SIZES[:n], noisy(RectifiedLaw().predict(SIZES[:n], theta), 7)))
    batch = fit_curves(RectifiedLaw(), [c[0] for c in curves], [c[1] for c in curves])
    for (sizes, y), together in zip(curves, batch, strict=True):
        alone = fit_law(RectifiedLaw(), sizes, y)
        # Padding changes BLAS summation order, so agreement is to round-off, not bits.
        np.testing.assert_allclose(together.theta, alone.theta, rtol=1e-6, atol=1e-6)


def best_least_squares(law, n, y, robust="linear", f_scale=0.01, grid_starts=8,
                       random_starts=4, seed=0):
    """The reference fit: scipy's ``least_squares`` (TRF, the engine's bounds and robust
    loss) from the best points of the law's grid, with (B, E) solved in closed form, and
    from random points of the box, each on its own; the lowest objective wins."""
    lo = np.array([LOG_B_BOUNDS[0], math.log(E_FLOOR)] + [b[0] for b in law.shape_bounds()])
    hi = np.array([LOG_B_BOUNDS[1], math.log(y.max())] + [b[1] for b in law.shape_bounds()])
    grid = law.shape_grid(n)
    with np.errstate(all="ignore"):
        g = law.basis(n[None, :], grid)
        b, e = project_linear(g, y[None], 1.0 / y[None] ** 2, y.max())
        sse = ((np.log(b[:, None] * g + e[:, None]) - np.log(y)) ** 2).sum(-1)
    best = np.argsort(np.where(np.isfinite(sse), sse, np.inf), kind="stable")[:grid_starts]
    starts = [np.r_[math.log(b[i]), math.log(e[i]), grid[i]] for i in best]
    rng = np.random.default_rng(seed)
    starts += [lo + (hi - lo) * rng.uniform(0.05, 0.95, lo.size) for _ in range(random_starts)]

    def residuals(theta):
        with np.errstate(all="ignore"):
            r = np.log(law.predict(n, theta)) - np.log(y)
        return np.where(np.isfinite(r), r, 1e3)

    fits = [least_squares(residuals, np.clip(x0, lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo)),
                          bounds=(lo, hi), method="trf", x_scale="jac", loss=robust,
                          f_scale=f_scale, max_nfev=300) for x0 in starts]
    return min(fits, key=lambda sol: sol.cost)


def synthetic_curves(law, count, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        beta = rng.uniform(0.3, 0.9)
        if isinstance(law, PowerLaw):
            sizes = SIZES[1:]
            theta = [math.log(rng.uniform(1, 3) * 200**beta), math.log(rng.uniform(0.5, 2)), beta]
        else:
            sizes = SIZES
            d0 = math.exp(rng.uniform(math.log(1e3), math.log(1e4)))
            theta = [math.log(rng.uniform(1, 3) * d0**beta), math.log(rng.uniform(0.5, 2)),
                     beta, math.log(d0)]
        out.append((sizes, noisy(law.predict(sizes, np.array(theta)), seed + i)))
    return out


def benchmark_curves(law, step):
    curves = [c.within(b) for t in TASKS for b in BUDGETS for c in load_benchmark(t)]
    return [fit_points(c, law) for c in curves[::step]]


def assert_engine_reaches_the_best_optimum(law, curves, robust="linear", f_scale=0.01,
                                           extrapolation=True):
    """The batched engine's objective is no worse than the best of many independent
    least_squares runs; with a plain least-squares objective, so is its answer."""
    fits = fit_curves(law, [c[0] for c in curves], [c[1] for c in curves], robust=robust,
                      f_scale=f_scale)
    for (n, y), fit in zip(curves, fits, strict=True):
        ref = best_least_squares(law, n, y, robust, f_scale)
        assert fit.cost <= ref.cost * (1 + 1e-6) + 1e-12, (n.size, fit.cost, ref.cost)
        if extrapolation:
            assert float(fit.predict(TARGET)) == pytest.approx(
                float(law.predict(TARGET, ref.x)), rel=1e-3)


@pytest.mark.parametrize("law", [RectifiedLaw(), PowerLaw()], ids=["rectified", "vanilla"])
def test_batched_engine_reaches_the_least_squares_optimum(law):
    curves = synthetic_curves(law, 2, seed=11) + benchmark_curves(law, step=210)
    assert_engine_reaches_the_best_optimum(law, curves)


def test_batched_engine_reaches_the_robust_optimum():
    """Huber (vanilla's loss): the same objective value.  The answer is not compared: on
    curves whose floor sits at its bound the robust objective is flat to 1e-8 along a
    valley, and equally good fits extrapolate up to a few % apart (starts_agree says so)."""
    law = PowerLaw()
    assert_engine_reaches_the_best_optimum(law, benchmark_curves(law, step=315),
                                           robust="huber", f_scale=0.001, extrapolation=False)


@pytest.mark.slow
@pytest.mark.parametrize("law", [RectifiedLaw(), PowerLaw()], ids=["rectified", "vanilla"])
def test_batched_engine_reaches_the_least_squares_optimum_on_many_curves(law):
    curves = synthetic_curves(law, 10, seed=3) + benchmark_curves(law, step=10)
    assert_engine_reaches_the_best_optimum(law, curves)


def test_polish_keeps_the_batched_optimum():
    """least_squares started at the batched answer finds nothing better (stationarity)."""
    law = RectifiedLaw()
    theta = np.array([math.log(2 * 3000**0.6), math.log(1.1), 0.6, math.log(3000.0)])
    y = noisy(law.predict(SIZES, theta), 11)
    fit = fit_law(law, SIZES, y, polish="never")
    polished = fit_law(law, SIZES, y, polish="always")
    assert polished.cost == pytest.approx(fit.cost, rel=1e-6)
    assert float(fit.predict(1.6e6)) == pytest.approx(float(polished.predict(1.6e6)), rel=1e-3)


def test_robust_loss_resists_an_outlier():
    law = RectifiedLaw()
    theta = np.array([math.log(2 * 3000**0.6), math.log(1.1), 0.6, math.log(3000.0)])
    y = law.predict(SIZES, theta)
    y[5] *= 1.3  # one bad measurement
    plain = fit_law(law, SIZES, y)
    robust = fit_law(law, SIZES, y, robust="soft_l1", f_scale=0.005)
    truth = float(law.predict(1.6e6, theta))
    assert abs(float(robust.predict(1.6e6)) / truth - 1) < abs(
        float(plain.predict(1.6e6)) / truth - 1)


def test_prior_pulls_an_underdetermined_parameter():
    law = RectifiedLaw()
    theta = np.array([math.log(2 * 3000**0.6), math.log(1.1), 0.6, math.log(3000.0)])
    sizes = SIZES[:5]  # only the flat start: beta is barely identified
    y = noisy(law.predict(sizes, theta), 5)
    pulled = fit_law(law, sizes, y, prior=Prior(mean={"beta": 0.9}, sd={"beta": 0.01}))
    assert pulled.params["beta"] == pytest.approx(0.9, abs=0.03)


def test_fit_result_diagnostics():
    law = RectifiedLaw()
    theta = np.array([math.log(2 * 3000**0.6), math.log(1.1), 0.6, math.log(3000.0)])
    fit = fit_law(law, SIZES, noisy(law.predict(SIZES, theta), 2))
    assert fit.success and math.isfinite(fit.condition) and fit.condition > 1
    assert fit.residuals.shape == SIZES.shape
    assert set(fit.params) == {"B", "D_l", "beta", "E", "D0"}
    assert fit.params["D_l"] == pytest.approx(fit.params["D0"] ** fit.params["beta"])


def test_ntk_term_matches_the_definition():
    lam, a = np.array([0.5, 2.0, 0.0]), np.array([1.0, 3.0, 0.25])
    t = np.array([0.0, 1.0, 10.0])
    expected = [(np.exp(-2 * 0.1 * lam * ti) * a).sum() for ti in t]
    np.testing.assert_allclose(ntk_term(lam, a, 0.1, t), expected)


def test_robust_rho_derivatives():
    z = np.linspace(0.01, 9, 50)
    for name in ("linear", "soft_l1", "huber", "cauchy", "arctan"):
        rho, d1, _ = robust_rho(z, name)
        numeric = np.gradient(rho, z)
        np.testing.assert_allclose(d1[2:-2], numeric[2:-2], rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("call, message", [
    (lambda: fit_law(PowerLaw(), np.array([0.0, 200, 400]), np.array([3.0, 2, 1])),
     "the vanilla law cannot use size-0 (zero-shot) points"),
    (lambda: fit_law(RectifiedLaw(), np.array([200.0]), np.array([3.0])),
     "fitting the rectified law needs at least 2 points, got 1"),
    (lambda: fit_law(RectifiedLaw(), SIZES[:3], np.array([3.0, 2, 1]), robust="l7"),
     "unknown robust loss 'l7'; use one of linear, soft_l1, huber, cauchy, arctan"),
    (lambda: LensLLMLaw(ntk=None), "the LensLLM law needs an NTK spectrum; without one F is "
     "a free parameter and the law is the rectified law"),
    (lambda: LensLLMLaw(ntk=NTKSpectrum(np.ones(2), np.ones(2), 0.1), mode="measured"),
     "LensLLM 'measured' mode needs the measured step count t in the NTK data (ntk.steps); "
     "use mode 'fit-t' to fit t instead"),
])
def test_bad_fit_inputs(call, message):
    with pytest.raises(InputError) as info:
        call()
    assert str(info.value) == message
