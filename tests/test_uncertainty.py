"""Conformal intervals, P(best), the FLOPs ledger and the adaptive search."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

import lensllm
import synthetic_curves
from lensllm.core.curves import Curve, CurveSet
from lensllm.core.evaluation import calibration
from lensllm.core.search import (
    AdaptiveSearch,
    AdaptiveSettings,
    FlopsLedger,
    fixed_budget_fraction,
    replay,
    training_flops,
)
from lensllm.core.uncertainty import (
    ConformalErrorModel,
    conformal_interval,
    conformal_models,
    probability_best,
)
from lensllm.errors import InputError

SIZES = 100 * 2 ** np.arange(10)


power_task = partial(synthetic_curves.power_task, SIZES, n_models=8, noise=0.01)


def test_probability_best_matches_monte_carlo():
    mu = np.array([1.0, 1.03, 1.1, 1.5])
    p = probability_best(mu, 0.04)
    rng = np.random.default_rng(1)
    draws = np.log(mu) + 0.04 * rng.standard_normal((200_000, 4))
    mc = np.bincount(draws.argmin(1), minlength=4) / 200_000
    np.testing.assert_allclose(p, mc, atol=0.005)
    assert p.sum() == pytest.approx(1.0)


def test_probability_best_in_blocks_equals_one_pass(monkeypatch):
    # blocks keep memory linear in the number of candidates; the answer must not move
    from lensllm.core import uncertainty

    rng = np.random.default_rng(3)
    predicted = np.exp(rng.normal(0.0, 0.1, 257))
    whole = probability_best(predicted, 0.05)
    monkeypatch.setattr(uncertainty, "_PBEST_CHUNK", 10)
    np.testing.assert_allclose(probability_best(predicted, 0.05), whole, rtol=0, atol=1e-12)


def test_a_method_with_a_candidate_limit_says_so_at_once():
    sizes = [200, 400, 800, 1600]
    curves = CurveSet([Curve(f"m{i}", sizes, [3.0 + i / 1e4, 2.8, 2.7, 2.65], zero_shot=4.0)
                       for i in range(2001)], task="many")
    with pytest.raises(InputError) as info:
        lensllm.select(curves, method="lensllm", budget=1600, target=25600)
    assert str(info.value) == (
        "many: 2,001 candidates; the lensllm method ranks at most 2,000 at once (its time "
        "and memory grow faster than the count); rank a subset (e.g. one family) or use ats")
    assert lensllm.make_selector("ats").max_candidates is None
    # a long tie is named by its first candidates, not by all of them
    with pytest.warns(lensllm.RankingWarning, match=r"m0, m1, m2, m3, m4 and 1,996 more tie"):
        lensllm.select(curves, method="subset-loss", budget=1600, target=25600)


def test_probability_best_edge_cases():
    np.testing.assert_allclose(probability_best(np.array([1.0, 2.0]), math.nan), [0.5, 0.5])
    np.testing.assert_allclose(probability_best(np.array([1.0, 2.0]), 0.0), [1.0, 0.0])
    np.testing.assert_allclose(probability_best(np.array([3.0]), 0.1), [1.0])


def test_interval_is_central_and_widens_with_level():
    pred = np.array([1.0, 2.0])
    scores = np.linspace(0.0, 0.1, 99)  # rank ceil(100 * 0.9) = 90 of 99
    model = ConformalErrorModel(scores, scores, np.array([1.0]), gamma=1.0)
    lo90, hi90 = conformal_interval(pred, model, 1.0, 0.9)
    lo50, hi50 = conformal_interval(pred, model, 1.0, 0.5)
    np.testing.assert_allclose(lo90 * hi90, pred**2)  # symmetric in log space
    assert np.all(lo90 < lo50) and np.all(hi50 < hi90)
    np.testing.assert_allclose(hi90 / pred, math.exp(scores[89]), rtol=1e-9)
    # the width grows as horizon**gamma
    _lo, hi = conformal_interval(pred, ConformalErrorModel(scores, scores, np.array([1.0]),
                                                          gamma=1.5), 4.0, 0.9)
    np.testing.assert_allclose(hi / pred, math.exp(scores[89] * 8.0), rtol=1e-9)


def test_backtests_cut_the_budget_by_doublings():
    task = power_task()
    ats = lensllm.make_selector("ats")
    seen = []

    def predictor(reqs):
        seen.extend((r[1], r[2]) for r in reqs)
        return [s.predicted for s in ats.select_many(reqs)]

    model = conformal_models(predictor, [(task.within(3200), 3200, 51200)], 3)[0]
    assert list(model.horizons) == [1, 2, 3]  # 1600, 800, 400 leave >= 3 sizes
    assert seen == [(1600, 3200), (800, 3200), (400, 3200)]
    assert model.scores.size == 3 * len(task)
    empty = conformal_models(predictor, [(task.within(400), 400, 51200)], 3)[0]
    assert empty.horizons.size == 0 and math.isnan(empty.half_width(3.0))


def test_error_model_of_a_perfect_predictor_is_small():
    task = power_task(noise=0.0)
    ats = lensllm.make_selector("ats")
    model = conformal_models(lambda reqs: [s.predicted for s in ats.select_many(reqs)],
                             [(task.within(6400), 6400, 51200)], 3)[0]
    assert model.half_width(3.0) < 1e-9 and model.horizons.size >= 2


def test_select_carries_intervals_and_p_best():
    task = power_task(noise=0.01)
    sel = lensllm.select(task, "ats", budget=6400, target=51200)
    assert sel.p_best.sum() == pytest.approx(1.0)
    assert np.all(sel.lower < sel.predicted) and np.all(sel.predicted < sel.upper)
    assert sel.details["level"] == 0.9
    no_unc = lensllm.select(task, "ats", budget=6400, target=51200, uncertainty=False)
    assert no_unc.lower is None and no_unc.chosen == sel.chosen
    zs = lensllm.select(task, "zeroshot", budget=6400, target=51200)
    assert zs.lower is None and zs.p_best is None  # scores, not predictions


def test_calibration_of_a_well_specified_task():
    cells = calibration([power_task(noise=0.01, seed=s) for s in range(3)], "ats",
                        budgets=[6400, 3200], target=51200)
    coverage = np.mean([c.coverage for c in cells])
    assert 70 <= coverage <= 100
    assert {c.ratio for c in cells} == {"1/8", "1/16"}


def test_flops_ledger():
    ledger = FlopsLedger(tokens_per_example=35)
    assert ledger.charge("a", 1e8, 200) == 6 * 1e8 * 35 * 200
    ledger.charge("b", 2e8, 400)
    assert ledger.total == pytest.approx(6 * 35 * (1e8 * 200 + 2e8 * 400))
    assert ledger.by_model()["b"] == pytest.approx(training_flops(2e8, 400, 35))
    assert ledger.reference({"a": 1e8, "b": 2e8}, 1000) == pytest.approx(6 * 35 * 1000 * 3e8)
    per_model = FlopsLedger(tokens_per_example={"a": 10, "b": 20})
    assert per_model.charge("b", 1e6, 100) == 6 * 1e6 * 20 * 100
    sizes = [200 * 2**k for k in range(14)]
    assert fixed_budget_fraction(204800, 1638400, sizes) == pytest.approx(
        (2 * 204800 - 200) / 1638400)


def test_halving_keeps_everyone_until_it_can_back_test_then_finds_the_best():
    task = power_task(n_models=10, noise=0.005, seed=3)
    target = int(SIZES[-1])
    truth = task.losses_at(target, "")
    result = replay(CurveSet(list(task), task="t"), target, 50, "ats",
                    AdaptiveSettings(flops_fraction=0.2))
    first = result.rungs[0]
    assert len(first.survivors) == 10  # 3 sizes: nothing to back-test yet
    assert result.chosen == task.models[int(np.argmin(truth))]
    assert result.flops_fraction <= 0.2
    assert result.ledger.total == pytest.approx(sum(f for *_, f in result.ledger.entries))


def test_halving_respects_the_flops_budget():
    task = power_task(n_models=10, noise=0.02, seed=4)
    target = int(SIZES[-1])
    tight = replay(task, target, 50, "ats", AdaptiveSettings(flops_fraction=0.03))
    assert tight.flops_fraction <= 0.03 + 1e-12
    trained = [size for _, size, _ in tight.ledger.entries]
    assert max(trained) < target
    with pytest.raises(InputError) as info:
        replay(task, target, 50, "ats", AdaptiveSettings(flops_fraction=0.01))
    assert str(info.value) == (
        "the FLOPs budget (1 % of fine-tuning every candidate at the target) is smaller than "
        "the warm-up, which trains every candidate on the 3 smallest sizes (1.37 %); raise "
        "the FLOPs budget or start the ladder at a smaller size")


def test_halving_bad_inputs():
    task = power_task()
    with pytest.raises(InputError, match="halving needs at least 3 sizes below the target"):
        AdaptiveSearch("ats").run(lambda m, n: {}, list(task), [100, 200], 400, 10)
    no_params = CurveSet([Curve("x", SIZES, np.ones(10))], task="t")
    with pytest.raises(InputError) as info:
        AdaptiveSearch("ats").run(lambda m, n: {}, list(no_params), SIZES, 10**6, 10)
    assert str(info.value) == "halving needs every candidate's parameter count; missing for x"
    with pytest.raises(InputError, match="p_keep must be in"):
        AdaptiveSettings(p_keep=1.5)


def test_halving_rungs_keep_what_the_candidates_carry():
    """Each rung's curves keep the candidates' other measurements (weight metrics here)."""
    from lensllm.core.selectors.ats import AtS

    seen: list[dict] = []

    class RecordingAtS(AtS):
        def _check_curve(self, curve, budget, task):
            seen.append(curve.metrics)
            super()._check_curve(curve, budget, task)

    task = power_task(n_models=4, noise=0.005, seed=5)
    carried = [replace(c, metrics={"pl_alpha": float(i)}) for i, c in enumerate(task)]
    replay(CurveSet(carried, task="t"), int(SIZES[-1]), 50, RecordingAtS(),
           AdaptiveSettings(flops_fraction=0.2))
    assert seen and all(m is not None and "pl_alpha" in m for m in seen)


@pytest.mark.parametrize("method", ["zeroshot", "subset-loss", "model-size", "nlpmetrics"])
def test_halving_refuses_methods_that_only_rank(method):
    with pytest.raises(InputError) as info:
        AdaptiveSearch(method)
    assert str(info.value) == (
        f"the adaptive search needs a method that predicts the loss at the target; "
        f"{method!r} only ranks the candidates: use search: grid, or a method such as "
        "lensllm, ats or rectified")
