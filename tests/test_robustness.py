"""The robustness protocol, the conformal error model and the adaptive search."""

from __future__ import annotations

import itertools
import math
from functools import partial

import numpy as np
import pytest

import synthetic_curves
from lensllm.core.curves import Curve, CurveSet
from lensllm.core.evaluation import relacc
from lensllm.core.robustness import (
    RobustnessSettings,
    build_variants,
    leave_one_task_out,
    robustness,
    summarise,
)
from lensllm.core.search import AdaptiveSearch, AdaptiveSettings, beat_bound, replay, sweep
from lensllm.core.selectors import make_selector
from lensllm.core.uncertainty import conformal_interval, conformal_models, conformal_quantile
from lensllm.errors import InputError

SIZES = 100 * 2 ** np.arange(12)
TARGET = int(SIZES[-1])


power_task = partial(synthetic_curves.power_task, SIZES, n_models=12, noise=0.005)


# ------------------------------------------------------------------ the protocol


def test_variants_perturb_what_methods_see_and_leave_the_truth():
    tasks = [power_task(seed=1, task="a"), power_task(seed=2, task="b")]
    settings = RobustnessSettings(subset_sizes=(5,), subset_seeds=2, noise_levels=(0.02,),
                                  noise_seeds=2)
    variants = {v.name: v for v in build_variants(tasks, TARGET, settings)}
    assert list(variants) == ["in-sample", "5 models", "noise 2 %",
                              f"target {TARGET // 2:,}", f"target {TARGET // 4:,}"]
    truth = tasks[0].losses_at(TARGET, "")
    for case in variants["noise 2 %"].cases:
        if case.curves.task == "a":
            np.testing.assert_array_equal(case.truth, truth)  # truth untouched
            assert max(c.sizes.max() for c in case.curves) < TARGET  # out of sight
            seen = case.curves[0].losses
            assert not np.allclose(seen, tasks[0][0].losses[: seen.size])
    assert all(len(c.curves) == 5 for c in variants["5 models"].cases)
    assert len(variants["5 models"].cases) == 4  # 2 seeds x 2 tasks
    other = variants[f"target {TARGET // 4:,}"].cases[0]
    assert other.target == TARGET // 4 and other.budgets[0] == TARGET // 32
    # every budget leaves at least three sizes
    assert min(other.budgets) >= SIZES[2]


def test_robustness_reports_means_and_the_worst_cell_against_the_reference():
    tasks = [power_task(seed=1, task="a"), power_task(seed=2, task="b")]
    report = robustness(tasks, TARGET, ["subset-loss"],
                        RobustnessSettings(subset_sizes=(6,), subset_seeds=1,
                                           noise_levels=(0.01,), noise_seeds=1))
    row = report.get("in-sample", "subset-loss")
    cells = [c for c in report.cells if c.variant == "in-sample"]
    ours = {(c.task, c.budget): c for c in cells if c.method == "subset-loss"}
    ref = {(c.task, c.budget): c for c in cells if c.method == "ats"}
    diffs = [ours[k].relacc - ref[k].relacc for k in ours]
    assert row.worst_relacc == pytest.approx(min(diffs))
    assert row.relacc == pytest.approx(np.mean([c.relacc for c in ours.values()]))
    assert row.cells == len(ours)
    assert report.to_dict()["variants"]


def test_summarise_skips_undefined_correlations():
    from lensllm.core.robustness import CellScore

    cells = [CellScore("v", "t", None, "ats", 100, 800, 50.0, 90.0),
             CellScore("v", "t", None, "x", 100, 800, math.nan, 80.0)]
    row = next(s for s in summarise(cells, "ats") if s.method == "x")
    assert math.isnan(row.pearcorr) and row.worst_relacc == -10.0


def test_leave_one_task_out_scores_the_choice_made_on_the_other_tasks():
    tasks = [power_task(seed=k, task=f"t{k}") for k in range(3)]
    variants = build_variants(tasks, TARGET, RobustnessSettings(
        subset_sizes=(), noise_levels=(), targets=()))
    held = leave_one_task_out({"ats": "ats", "zeroshot": "zeroshot"}, variants)
    assert [h.task for h in held] == ["t0", "t1", "t2"]
    assert all(h.chosen == "ats" for h in held)  # exact power laws: ats is perfect
    assert all(h.relacc == pytest.approx(h.ref_relacc) for h in held)
    with pytest.raises(InputError, match="at least two tasks"):
        leave_one_task_out({"ats": "ats"}, build_variants(tasks[:1], TARGET, RobustnessSettings(
            subset_sizes=(), noise_levels=(), targets=())))


# ------------------------------------------------------------------ conformal


def test_conformal_quantile_and_interval():
    scores = np.arange(1, 20, dtype=float)  # 19 scores: rank ceil(20 * 0.9) = 18
    assert conformal_quantile(scores, 0.9) == 18.0
    assert conformal_quantile(scores[:3], 0.9) == 3.0  # too few: the largest
    assert math.isnan(conformal_quantile(np.empty(0), 0.9))
    task = power_task(noise=0.01, seed=3)
    ats = make_selector("ats")
    model = conformal_models(lambda r: [s.predicted for s in ats.select_many(r)],
                             [(task, 6400, TARGET)], 3, gamma=1.5)[0]
    assert list(model.horizons) == [1, 2, 3, 4]
    pred = np.array([1.0, 2.0])
    lo, hi = conformal_interval(pred, model, 3.0)
    np.testing.assert_allclose(lo * hi, pred**2)
    wide = conformal_interval(pred, model, 5.0)
    assert np.all(wide[0] < lo) and np.all(wide[1] > hi)
    # survivors only: back-tests of two alive candidates score two errors per horizon
    alive = conformal_models(lambda r: [s.predicted for s in ats.select_many(r)],
                             [(task, 6400, TARGET)], 3, alive=[["m0", "m1"]])[0]
    assert alive.scores.size == 2 * alive.horizons.size


# ------------------------------------------------------------------ the search


def test_beat_bound_is_an_upper_bound_on_p_best():
    from lensllm.core.uncertainty import probability_best

    pred = np.array([1.0, 1.01, 1.02, 1.03, 1.2])
    bound = beat_bound(pred, 0.05)
    assert bound[0] == 0.5 or bound[0] == pytest.approx(0.5)
    assert np.all(probability_best(pred, 0.05) <= bound + 1e-9)
    np.testing.assert_array_equal(beat_bound(pred, math.nan), np.ones(5))


def test_the_search_never_drops_a_candidate_for_cost():
    """The best candidate is by far the most expensive: a small budget trains it less far,
    but it is never dropped, and every drop had a bound below p_keep."""
    task = power_task(n_models=8, noise=0.003, seed=7)
    truth = task.losses_at(TARGET, "")
    best = int(np.argmin(truth))
    curves = [Curve(c.model, c.sizes, c.losses, params=(1e11 if i == best else c.params))
              for i, c in enumerate(task)]
    task = CurveSet(curves, task="t")
    settings = AdaptiveSettings(p_keep=0.01, p_stop=1.0)
    for share in (0.01, 0.03, 0.1):
        result = replay(task, TARGET, 10, "ats", AdaptiveSettings(
            p_keep=0.01, p_stop=1.0, flops_fraction=share))
        assert all(task.models[best] in rung.survivors for rung in result.rungs)
    search = AdaptiveSearch("ats", settings)
    replay(task, TARGET, 10, search)
    decisions = [v for k, v in search.cache.items() if k[0] == "decide"]
    assert any(len(d.alive) < len(d.p_best) for d in decisions)  # it does drop
    for d in decisions:
        for m in set(d.p_best) - set(d.alive):
            assert d.bound[m] < 0.01 and m != d.leader


def test_decisions_do_not_depend_on_the_budget_and_more_budget_never_hurts():
    task = power_task(n_models=10, noise=0.004, seed=11)
    truth = task.losses_at(TARGET, "")
    shares = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
    results = sweep(task, TARGET, 10, shares, "ats", AdaptiveSettings(p_stop=0.999))
    done = [r for r in results if r is not None]
    assert done, "the warm-up must fit the largest budget"
    # nested: each run's full rungs are a prefix of the next run's
    for small, large in itertools.pairwise(done):
        full = [r for r in small.rungs if r.trained == r.survivors and r.trained]
        for a, b in zip(full, large.rungs, strict=False):
            assert (a.size, a.survivors, a.leader) == (b.size, b.survivors, b.leader)
        assert small.ledger.total <= large.ledger.total + 1e-6
    scores = [relacc(float(truth[task.models.index(r.chosen)]), truth) for r in done]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(scores))
    assert scores[-1] == 100.0
    for r, share in zip(results, shares, strict=True):
        if r is not None:
            assert r.flops_fraction <= share + 1e-9


def test_stopping_rule():
    task = power_task(n_models=6, noise=0.001, seed=5)
    stop = replay(task, TARGET, 10, "ats", AdaptiveSettings(p_stop=0.5, flops_fraction=1.0))
    assert stop.stop_reason.startswith("leader P(best)") or stop.stop_reason == \
        "one candidate left"
    assert stop.rungs[-1].leader_p_best >= 0.5 or len(stop.rungs[-1].survivors) == 1
    never = replay(task, TARGET, 10, "ats", AdaptiveSettings(p_stop=1.0, p_keep=0.0,
                                                            flops_fraction=1.0))
    # it stops at the first rung where the criterion holds, not later
    assert all(r.leader_p_best < 0.5 and len(r.survivors) > 1 for r in stop.rungs[:-1])
    assert never.flops_fraction >= stop.flops_fraction
    assert all(r.leader_p_best < 1.0 for r in never.rungs[:-1])


def test_search_bad_inputs():
    task = power_task()
    with pytest.raises(InputError, match="p_keep must be in"):
        AdaptiveSettings(p_keep=1.5)
    with pytest.raises(InputError, match="smaller than the warm-up"):
        replay(task, TARGET, 10, "ats", AdaptiveSettings(flops_fraction=1e-4))
    with pytest.raises(InputError, match="only ranks"):
        AdaptiveSearch("zeroshot")


# ------------------------------------------------------------------ the command line


def _invoke(*args):
    from click.testing import CliRunner

    from lensllm.cli import app

    return CliRunner().invoke(app, list(args))


def _write(tmp_path, with_params=True):
    task = power_task(n_models=6, noise=0.004, seed=2)
    lines = ["model,n,loss" + (",params" if with_params else "")]
    for c in task:
        for n, loss in zip(c.sizes, c.losses, strict=True):
            lines.append(f"{c.model},{n},{float(loss)!r}"
                         + (f",{int(c.params)}" if with_params else ""))
    path = tmp_path / "curves.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_evaluate_adaptive(tmp_path):
    path = _write(tmp_path)
    out = _invoke("evaluate", str(path), "--target", str(TARGET), "--adaptive",
                  "--tokens-per-example", "40", "--flops-budgets", "0.05,0.2", "-m", "ats")
    assert out.exit_code == 0, out.output
    assert "adaptive <= 5 %" in out.output and "ats at 1/8" in out.output
    assert "lowest at 25,600" in out.output
    out = _invoke("evaluate", str(path), "--target", str(TARGET), "--adaptive")
    assert "--adaptive needs --tokens-per-example" in str(out.exception)
    bare = _write(tmp_path, with_params=False)
    out = _invoke("evaluate", str(bare), "--target", str(TARGET), "--adaptive",
                  "--tokens-per-example", "40")
    assert "needs every model's parameter count" in str(out.exception)


def test_cli_evaluate_robustness(tmp_path):
    path = _write(tmp_path)
    out = _invoke("evaluate", str(path), "--target", str(TARGET), "--robustness",
                  "-m", "subset-loss", "--format", "json")
    assert out.exit_code == 0, out.output
    import json

    data = json.loads(out.output)
    variants = {v["variant"] for v in data["variants"]}
    assert {"in-sample", "noise 1 %", "noise 2 %"} <= variants
    assert "10 models" not in variants  # six models: nothing to subsample
    assert data["adaptive"] == []  # no --tokens-per-example: no FLOPs to count


@pytest.mark.slow
def test_default_predictor_stays_near_ats_on_every_robustness_variant():
    """The goals the evidence prior was chosen for (benchmarks/tune_evidence_prior.py):
    on every variant, means within 0.1 of AtS or better and no cell more than 10 RelAcc
    points below it."""
    from lensllm.core.benchmark import TARGET as BENCH_TARGET
    from lensllm.core.benchmark import TASKS, load_benchmark

    report = robustness([load_benchmark(t) for t in TASKS], BENCH_TARGET, ["lensllm"])
    for row in report.summaries:
        if row.method != "lensllm":
            continue
        assert row.pearcorr >= row.ref_pearcorr, row.variant
        assert row.relacc >= row.ref_relacc - 0.1, row.variant
        assert row.worst_relacc >= -10.0, (row.variant, row.worst_relacc_cell)
