"""benchmarks/search_ceiling.py: two-stage searches, their ceiling and the one-member rule."""

from __future__ import annotations

from benchmark_scripts import load_script
from lensllm.core.benchmark import TARGET, load_benchmark
from lensllm.core.evaluation import relacc
from lensllm.core.search import fixed_budget_fraction
from lensllm.core.selectors import make_selector
from lensllm.core.tuning import ADAPTIVE_BUDGETS

CEILING = load_script("search_ceiling")


def test_stage_two_goes_as_far_as_the_budget_allows() -> None:
    ladder = [1, 2, 4, 8]
    # spent 3 (sizes 1 and 2, params 1); the survivors (params 1) fit 4 (7 <= 10), not 8
    assert CEILING._stage_two_size(ladder, 2, 3.0, 10.0, 1.0) == 4
    assert CEILING._stage_two_size(ladder, 2, 3.0, 7.0, 1.0) == 4   # exactly at the budget
    assert CEILING._stage_two_size(ladder, 2, 3.0, 6.9, 1.0) == 2   # nothing more fits
    assert CEILING._stage_two_size(ladder, 2, 3.0, 100.0, 0.5) == 8


def test_one_stage_members_are_fixed_budget_selection() -> None:
    table, reached, skipped = CEILING.member_table("lin2024", ["ats"])
    assert skipped == []
    curves = load_benchmark("gigaword")
    truth = curves.losses_at(TARGET, "the test scores against the true loss")
    ladder = sorted({int(n) for c in curves for n in c.sizes if n < TARGET})
    ats = make_selector("ats")
    one_stage = [m for m in table if m[2] == 0]
    assert one_stage
    for member in one_stage:
        for share in ADAPTIVE_BUDGETS:
            if ("gigaword", share) not in table[member]:
                continue
            s2 = reached[(member, "gigaword", share)]
            # everyone trained on the whole ladder up to s2: the largest size that fits
            assert fixed_budget_fraction(s2, TARGET, ladder) <= share
            larger = [n for n in ladder if n > s2]
            if larger:
                assert fixed_budget_fraction(larger[0], TARGET, ladder) > share
            chosen = ats.select(curves, s2, TARGET).chosen
            assert table[member][("gigaword", share)] == relacc(
                float(truth[curves.models.index(chosen)]), truth)


def test_the_ceiling_is_the_best_member_and_at_least_the_one_stage_ceiling() -> None:
    table, reached, _ = CEILING.member_table("lin2024", ["ats", "subset-loss"])
    rows = CEILING.ceiling_rows(table, reached, ["flan", "wmt19", "gigaword"])
    assert {r["task"] for r in rows} == {"flan", "wmt19", "gigaword"}
    for row in rows:
        cell = (row["task"], row["budget"])
        assert row["ceiling"] == max(v[cell] for v in table.values() if cell in v)
        assert row["ceiling"] >= row["fixed_ceiling"]
        method, s1, k, s2 = row["member"]
        assert table[(method, s1, k)][cell] == row["ceiling"]
        assert s2 >= s1 * TARGET - 1e-6


def test_the_rule_keeps_the_best_worst_cell_and_needs_every_budget() -> None:
    budgets = (0.01, 0.02)
    table = {
        ("a", 0.001, 2): {("x", 0.01): 90.0, ("x", 0.02): 100.0, ("y", 0.01): 95.0,
                          ("y", 0.02): 95.0},
        ("b", 0.001, 2): {("x", 0.01): 92.0, ("x", 0.02): 92.0, ("y", 0.01): 92.0,
                          ("y", 0.02): 92.0},
        # best on x, but it does not fit the smallest budget on y: it does not qualify
        ("c", 0.01, 0): {("x", 0.01): 100.0, ("x", 0.02): 100.0, ("y", 0.02): 100.0},
    }
    assert CEILING.choose_member(table, ["x", "y"], budgets) == ("b", 0.001, 2)
    assert CEILING.choose_member(table, ["x"], budgets) == ("c", 0.01, 0)
    # a tie on the worst cell goes to the larger mean
    table[("d", 0.001, 3)] = {c: (100.0 if c == ("y", 0.02) else 92.0)
                              for c in table[("b", 0.001, 2)]}
    assert CEILING.choose_member(table, ["x", "y"], budgets) == ("d", 0.001, 3)
