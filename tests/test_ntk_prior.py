"""The NTK prior on the pooled fit's knees (``lensllm[ntk_prior=S]``)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensllm.core.benchmark import load_benchmark
from lensllm.core.curves import Curve, CurveSet, NTKSpectrum
from lensllm.core.selectors import make_selector
from lensllm.core.selectors.ntkprior import fit_line, log_ntk_terms
from lensllm.core.selectors.pooled import PooledSettings, pooled_lensllm_predict
from lensllm.errors import InputError

SIZES = 16 * 2 ** np.arange(9)          # 16 ... 4,096, as the zoo suite
BUDGET, TARGET = 512, 4096


def law_task(seed: int, n: int = 12, beta: float = 0.5, noise: float = 0.03,
             informative: bool = True, steps: float | None = 0.0) -> tuple[CurveSet, np.ndarray]:
    """Curves of ``log L = log 30 - log(D0_i^β + D^β)`` with knees log D0_i from log 16
    to 8.5 and multiplicative noise, each with a one-eigenvalue spectrum whose F at
    t = 0 is ``D0_i^β / e^2`` (informative: the law up to F's unit) or unrelated to
    the knee.  Returns the curves and the true log knees."""
    rng = np.random.default_rng(seed)
    knees = rng.uniform(np.log(16), 8.5, n)
    log_f = beta * knees - 2.0 if informative else rng.uniform(0.0, 5.0, n)
    curves = []
    for i, k in enumerate(knees):
        loss = 30 / (np.exp(beta * k) + SIZES ** beta) * np.exp(noise * rng.normal(size=9))
        spectrum = NTKSpectrum(np.array([1.0]), np.array([np.exp(log_f[i])]), 1e-3,
                               steps=steps)
        curves.append(Curve(f"m{i}", SIZES, loss, ntk=spectrum))
    return CurveSet(curves, task=f"law{seed}"), knees


def without_spectra(curves: CurveSet) -> CurveSet:
    return CurveSet((dataclasses.replace(c, ntk=None) for c in curves), task=curves.task)


def fits_equal(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in
               ("predicted", "beta", "log_b", "log_knee", "weight", "evidence"))


def centred_knee_error(curves: CurveSet, knees: np.ndarray, prior: float) -> float:
    fit = pooled_lensllm_predict([(curves, BUDGET, TARGET)],
                                 PooledSettings(ntk_prior=prior, recency=(1.4142,)))[0]
    error = fit.log_knee[0] - knees
    return float(np.abs(error - error.mean()).mean())


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), beta=st.floats(0.35, 0.6), noise=st.floats(0.03, 0.05))
def test_an_informative_f_recovers_the_knees_better(seed, beta, noise):
    # The prior's offset is free (F has no unit), so it can place knees only relative
    # to each other: the error is measured after removing the common shift.  Regime:
    # knees the data pin loosely (gradual transitions, 3-5 % noise), summed over four
    # tasks of twelve candidates.
    tasks = [law_task(seed + k, beta=beta, noise=noise) for k in range(4)]
    plain = sum(centred_knee_error(c, k, 0.0) for c, k in tasks)
    prior = sum(centred_knee_error(c, k, 16.0) for c, k in tasks)
    assert prior < plain


def test_the_prior_fits_the_line_the_law_implies():
    curves, _ = law_task(0, n=16, noise=0.005)
    fit = pooled_lensllm_predict([(curves, BUDGET, TARGET)], PooledSettings(ntk_prior=16))[0]
    assert fit.ntk_line is not None
    # log D0 = (log F + 2) / β with β = 0.5: slope 2, offset 4 (up to the fit's β)
    np.testing.assert_allclose(fit.ntk_line[:, 1], 2.0, atol=0.15)
    np.testing.assert_allclose(fit.ntk_line[:, 0], 4.0, atol=0.6)


def test_an_unrelated_f_gets_a_flat_or_weak_line():
    curves, _ = law_task(1, informative=False, noise=0.005)
    fit = pooled_lensllm_predict([(curves, BUDGET, TARGET)], PooledSettings(ntk_prior=16))[0]
    assert fit.ntk_line is not None and np.all(fit.ntk_line[:, 1] >= 0)
    plain = pooled_lensllm_predict([(curves, BUDGET, TARGET)])[0]
    # knees the data pin (0.5 % noise) stay near where the data put them
    assert np.median(np.abs(fit.log_knee - plain.log_knee)) < 0.3


def test_scale_zero_is_the_default_bit_for_bit():
    curves, _ = law_task(2)
    requests = [(curves, b, TARGET) for b in (64, 128, 256, 512)]
    default = pooled_lensllm_predict(requests)
    for a, b in zip(default, pooled_lensllm_predict(requests, PooledSettings(ntk_prior=0)),
                    strict=True):
        assert fits_equal(a, b) and b.ntk_line is None
    on = pooled_lensllm_predict(requests, PooledSettings(ntk_prior=4))
    assert not all(fits_equal(a, b) for a, b in zip(default, on, strict=True))
    assert make_selector("lensllm[ntk_prior=0]").select(curves, 512, TARGET).scores.tolist() \
        == make_selector("lensllm").select(curves, 512, TARGET).scores.tolist()


def test_curves_without_spectra_give_the_default_exactly():
    curves, _ = law_task(3)
    bare = without_spectra(curves)
    for budget in (128, 512):
        a = pooled_lensllm_predict([(bare, budget, TARGET)])[0]
        b = pooled_lensllm_predict([(bare, budget, TARGET)], PooledSettings(ntk_prior=16))[0]
        assert fits_equal(a, b) and b.ntk_line is None
    # the bundled benchmark has no spectra: the variant's selections are the default's
    flan = load_benchmark("flan")
    for budget in (204_800, 3_200):
        a = make_selector("lensllm").select(flan, budget, 1_638_400)
        b = make_selector("lensllm[ntk_prior=16]").select(flan, budget, 1_638_400)
        assert a.scores.tolist() == b.scores.tolist() and a.chosen == b.chosen


def test_fewer_than_three_usable_spectra_give_the_default():
    curves, _ = law_task(4)
    # two curves keep a spectrum; one more has a spectrum without a step count
    kept = [c if i < 2 else dataclasses.replace(c, ntk=None) for i, c in enumerate(curves)]
    kept[2] = dataclasses.replace(kept[2], ntk=dataclasses.replace(curves[2].ntk, steps=None))
    few = CurveSet(kept, task=curves.task)
    assert np.isfinite(log_ntk_terms(few)).sum() == 2
    a = pooled_lensllm_predict([(few, BUDGET, TARGET)])[0]
    b = pooled_lensllm_predict([(few, BUDGET, TARGET)], PooledSettings(ntk_prior=16))[0]
    assert fits_equal(a, b) and b.ntk_line is None


def test_log_ntk_terms_reads_f_at_the_measured_steps():
    spectrum = NTKSpectrum(np.array([2.0, 0.0]), np.array([3.0, 1.0]), 0.25, steps=2.0)
    curves = CurveSet([Curve("a", [16, 32], [2.0, 1.0], ntk=spectrum),
                       Curve("b", [16, 32], [2.0, 1.0]),
                       Curve("c", [16, 32], [2.0, 1.0],
                             ntk=dataclasses.replace(spectrum, projections=np.zeros(2)))])
    # F = 3 exp(-2 * 0.25 * 2 * 2) + 1
    np.testing.assert_allclose(log_ntk_terms(curves)[0], np.log(3 * np.exp(-2.0) + 1))
    assert np.isnan(log_ntk_terms(curves)[1:]).all()   # no spectrum; F = 0 has no log


def test_fit_line_keeps_the_slope_non_negative():
    grid = np.linspace(0.0, 10.0, 101)
    knees = np.array([6.0, 5.0, 4.0, 3.0])          # falling in log F
    sse = 10.0 * (grid[None, None, :] - knees[None, :, None]) ** 2
    centre, line = fit_line(sse, grid, np.array([1.0, 2.0, 3.0, 4.0]), 100.0)
    assert line[0, 1] == 0.0
    np.testing.assert_allclose(centre, 4.5, atol=0.01)
    centre, line = fit_line(sse, grid, np.array([4.0, 3.0, 2.0, 1.0]), 100.0)
    np.testing.assert_allclose(line[0], [2.0, 1.0], atol=0.01)
    np.testing.assert_allclose(centre[0], knees, atol=0.01)


def test_bad_scale_is_an_input_error():
    with pytest.raises(InputError) as info:
        PooledSettings(ntk_prior=-1)
    assert str(info.value) == "pooled: ntk_prior must be a number >= 0, got -1"
    with pytest.raises(InputError) as info:
        make_selector("lensllm[ntk_prior=strong]")
    assert str(info.value) == "lensllm: ntk_prior must be a number >= 0, got 'strong'"


def lensllm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lensllm", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_evaluates_the_variant_and_rejects_a_bad_scale(tmp_path):
    curves, _ = law_task(5)
    path = tmp_path / "law.json"
    path.write_text(json.dumps(curves.to_json()))
    common = ["evaluate", str(path), "--target", str(TARGET), "--budgets", "512,256"]
    ok = lensllm(*common, "--methods", "lensllm,lensllm[ntk_prior=4]", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert "lensllm[ntk_prior=4]" in ok.stdout
    bad = lensllm(*common, "--methods", "lensllm[ntk_prior=-2]")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: lensllm: ntk_prior must be a number >= 0, got -2"


@pytest.mark.slow
def test_tuning_script_prints_its_tables_and_one_decision(tmp_path):
    # A suite folder as `lensllm suite build` lays it out, with two law-made tasks.
    tasks = {}
    for seed in (6, 7):
        curves, _ = law_task(seed, n=8)
        (tmp_path / f"{curves.task}.json").write_text(json.dumps(
            {**curves.to_json(), "task": curves.task}))
        tasks[curves.task] = {"kind": "causal-lm"}
    (tmp_path / "suite.json").write_text(json.dumps(
        {"target": TARGET, "budgets": [512, 256, 128, 64], "tasks": tasks}))
    script = Path(__file__).parents[1] / "benchmarks" / "tune_ntk_prior.py"
    done = subprocess.run([sys.executable, str(script), "--suite-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "every scale gives the default's cells exactly: True" in out
    for heading in ("## Leave-one-task-out", "## Robustness protocol on the zoo suite"):
        assert heading in out
    # every held-out task x ratio: 3 lin2024 tasks x 7 ratios + 2 zoo tasks x 4 ratios
    assert out.count("| lin2024/") == 21 and out.count("| zoo/law") == 8
    decisions = [line for line in out.splitlines() if line.startswith("DECISION: ")]
    assert len(decisions) == 1
