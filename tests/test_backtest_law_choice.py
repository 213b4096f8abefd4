"""benchmarks/backtest_law_choice.py: the rule uses the method whose back-tests were best."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark_scripts import load_script
from lensllm.core.benchmark import TARGET, load_benchmark
from lensllm.core.robustness import RobustnessSettings, build_variants
from lensllm.core.selectors import make_selector

CHOICE = load_script("backtest_law_choice")
METHODS = ("vanilla", "ats")


def test_criteria_score_a_back_test() -> None:
    measured = np.array([1.0, 2.0, 3.0])
    assert CHOICE.criterion("pear", measured * 2, measured) == pytest.approx(-100.0)
    assert CHOICE.criterion("rank", np.array([5.0, 6.0, 7.0]), measured) == pytest.approx(
        -100.0)
    # a shift shared by every candidate costs nothing; a change of order does
    assert CHOICE.criterion("cmse", measured * 1.5, measured) == pytest.approx(0.0)
    assert CHOICE.criterion("cmse", measured[::-1], measured) > 0.1
    with pytest.raises(ValueError, match="unknown criterion 'mae'; one of pear, rank, cmse"):
        CHOICE.criterion("mae", measured, measured)


def test_the_rule_scores_as_the_method_its_back_tests_pick() -> None:
    variants = build_variants([load_benchmark("gigaword")], TARGET, RobustnessSettings(
        subset_sizes=(), noise_levels=(), targets=(), ratios=(8, 64)))
    cells, picks = CHOICE.law_choice_cells(variants, METHODS)
    case = variants[0].cases[0]
    by = {(c.method, c.budget): c for c in cells}
    for budget in case.budgets:
        # the back-tests, done here by hand: cut by 1 and 2 doublings, predict the budget
        seen = case.curves.within(budget)
        measured = seen.losses_at(budget, "")
        mean = {}
        for method in METHODS:
            preds = [make_selector(method).select(seen, budget // 2**h, budget).predicted
                     for h in (1, 2)]
            mean[method] = np.mean([CHOICE.criterion("pear", p, measured) for p in preds])
        best = min(mean, key=mean.get)
        rule, own = by[("by pear", budget)], by[(best, budget)]
        assert (rule.relacc, rule.pearcorr) == (own.relacc, own.pearcorr)
    assert sum(picks[("in-sample", "gigaword", "pear")].values()) == len(case.budgets)
