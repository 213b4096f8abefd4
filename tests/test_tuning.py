"""The interval calibration on residuals of a known law, the tuning rules of
lensllm.core.tuning, and their leave-one-task-out check (also through the CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensllm.cli import main
from lensllm.core.tuning import (
    HeldOutSetting,
    choose_gamma,
    choose_p_keep,
    loto_gamma,
)
from lensllm.core.uncertainty import ConformalErrorModel, conformal_interval, conformal_quantile
from lensllm.errors import InputError
from test_suites import _write_suite


def _known_law_model(rng: np.random.Generator, n: int, gamma: float, sd: float
                     ) -> ConformalErrorModel:
    """Back-test errors e ~ N(0, (sd h^gamma)^2) at horizons 1 ... 4, n candidates each."""
    hs = np.arange(1, 5, dtype=float)
    errors = sd * hs[:, None] ** gamma * rng.standard_normal((hs.size, n))
    scores = (np.abs(errors) / hs[:, None] ** gamma).ravel()
    return ConformalErrorModel(scores, scores, hs, gamma)


@pytest.mark.parametrize("gamma", [1.0, 1.65])
def test_intervals_cover_their_level_when_errors_follow_the_scaling_law(gamma):
    # Errors that grow exactly as horizon**gamma: the interval at a longer horizon than
    # any back-test must still hold its level, on average over many tasks.
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(400):
        model = _known_law_model(rng, 30, gamma, sd=0.02)
        horizon = 7.0
        truth = np.exp(0.02 * horizon**gamma * rng.standard_normal(30))
        lo, hi = conformal_interval(np.ones(30), model, horizon, 0.9)
        covered.append(np.mean((truth >= lo) & (truth <= hi)))
    # conformal: at least the level; with 120 scores at most level + 1/(n+1) + noise
    assert 0.895 <= np.mean(covered) <= 0.92


def test_intervals_of_the_wrong_exponent_miss_their_level():
    # the check above can fail: scores scaled with too small an exponent under-cover
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(200):
        model = _known_law_model(rng, 30, 1.5, sd=0.02)
        wrong = ConformalErrorModel(model.scores, model.rel_scores, model.horizons, 1.0)
        truth = np.exp(0.02 * 7.0**1.5 * rng.standard_normal(30))
        lo, hi = conformal_interval(np.ones(30), wrong, 7.0, 0.9)
        covered.append(np.mean((truth >= lo) & (truth <= hi)))
    assert np.mean(covered) < 0.8


@settings(max_examples=40, deadline=None)
@given(n=st.integers(5, 200), level=st.floats(0.5, 0.95), seed=st.integers(0, 2**31))
def test_split_conformal_quantile_holds_its_finite_sample_guarantee(n, level, seed):
    # For exchangeable scores the new one falls at or below the ceil((n + 1) level)-th
    # smallest of n with probability >= level (and < level + 1/(n + 1) without ties).
    rng = np.random.default_rng(seed)
    trials = 2000
    draws = rng.exponential(size=(trials, n + 1))
    k = math.ceil((n + 1) * level)
    q = np.sort(draws[:, :n], axis=1)[:, min(k, n) - 1]   # the same rank, all trials at once
    for row, expected in zip(draws[:5], q[:5], strict=True):
        assert conformal_quantile(row[:n], level) == expected
    hit = float(np.mean(draws[:, n] <= q))
    exact = min(k, n) / (n + 1)            # the exact probability for continuous scores
    se = math.sqrt(exact * (1 - exact) / trials)
    assert exact >= level - 1e-12 or k > n  # rank beyond n: the largest score, below level
    assert abs(hit - exact) <= 4 * se + 1e-9


def test_conformal_quantile_without_scores_is_nan():
    assert math.isnan(conformal_quantile(np.empty(0), 0.9))


def test_gamma_rule_takes_the_smallest_value_covering_every_training_cell():
    table = {1.0: {("a", 1): 70.0, ("b", 1): 90.0},
             1.5: {("a", 1): 80.0, ("b", 1): 60.0},
             2.0: {("a", 1): 95.0, ("b", 1): 90.0}}
    assert choose_gamma(table, ["a", "b"]) == 2.0
    assert choose_gamma(table, ["a"]) == 1.5
    assert choose_gamma(table, ["b"]) == 1.0
    # nothing reaches 75: the best worst cell
    low = {g: {k: v / 2 for k, v in cells.items()} for g, cells in table.items()}
    assert choose_gamma(low, ["a", "b"]) == 2.0


def test_p_keep_rule_takes_the_best_mean_and_the_smaller_value_on_a_tie():
    table = {0.01: {"a": [90.0, 100.0], "b": [80.0]},
             0.1: {"a": [95.0, 95.0], "b": [99.0]},
             0.2: {"a": [100.0, 100.0], "b": [60.0]}}
    assert choose_p_keep(table, ["a"]) == 0.2
    assert choose_p_keep(table, ["a", "b"]) == 0.1
    assert choose_p_keep(table, ["b"]) == 0.1
    tie = {0.05: {"a": [90.0]}, 0.02: {"a": [90.0]}}
    assert choose_p_keep(tie, ["a"]) == 0.02


def test_loto_gamma_scores_each_task_under_the_value_chosen_on_the_others(tmp_path):
    from lensllm.core.suites import load_suite

    suite = load_suite(str(_write_suite(tmp_path / "suite")))
    rows = loto_gamma(suite.curve_sets, suite.target, suite.budgets, method="ats")
    assert [r.task for r in rows] == ["prose", "pairs"]
    for r in rows:
        assert r.setting == "interval gamma"
        assert 0.0 <= r.metrics["min cell"] <= r.metrics["coverage"] <= 100.0
        assert r.worst.startswith("coverage ")
    with pytest.raises(InputError, match="leave-one-task-out needs at least two tasks"):
        loto_gamma(suite.curve_sets[:1], suite.target, suite.budgets)


def test_held_out_setting_json_has_no_nan():
    row = HeldOutSetting("s", "t", "1", "2", {"a": math.nan, "b": 1.0}, "-")
    assert row.to_dict()["metrics"] == {"a": None, "b": 1.0}
    json.dumps(row.to_dict(), allow_nan=False)


def test_cli_bench_robustness_loto_prints_every_tuned_setting(tmp_path: Path, capsys):
    folder = str(_write_suite(tmp_path / "suite"))
    main(["bench", "--suite", folder, "--robustness", "--loto", "--flops-budgets", "0.5"])
    out = capsys.readouterr().out
    for setting in ("lensllm: evidence_prior, recency", "interval gamma", "adaptive p_keep"):
        block = out[out.index(f"leave-one-task-out: {setting} (in-sample choice "):]
        lines = block.splitlines()
        assert lines[1].split()[:3] == ["held", "out", "chosen"]
        assert [line.split()[0] for line in lines[3:6]] == ["prose", "pairs", "mean"]


@pytest.mark.slow
def test_cli_bench_robustness_loto_json(tmp_path: Path, capsys):
    folder = str(_write_suite(tmp_path / "suite"))
    main(["bench", "--suite", folder, "--robustness", "--loto", "--flops-budgets", "0.5",
          "--format", "json"])
    payload = json.loads(capsys.readouterr().out)
    assert {r["setting"] for r in payload["loto"]} == {
        "lensllm: evidence_prior, recency", "interval gamma", "adaptive p_keep"}


@pytest.mark.parametrize("args, message", [
    (["--loto"], "--loto is part of the robustness protocol: add --robustness"),
    (["--robustness", "--loto", "--tasks", "flan"],
     "--loto needs at least two tasks (each is scored under the settings chosen on the "
     "others)"),
])
def test_cli_loto_bad_inputs(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", *args])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
