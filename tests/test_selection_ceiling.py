"""benchmarks/selection_ceiling.py: the per-cell ceiling, checked through evaluate()."""

from __future__ import annotations

from benchmark_scripts import load_script
from lensllm.core.benchmark import BUDGETS, TARGET, load_benchmark
from lensllm.core.evaluation import evaluate

METHODS = ["subset-loss", "vanilla", "rectified", "ats"]


CEILING = load_script("selection_ceiling")


def test_ceiling_is_the_best_method_per_cell_as_evaluate_scores_them() -> None:
    rows, skipped = CEILING.ceiling_rows("lin2024", noise=0.0, methods=METHODS)
    assert skipped == []
    flan = [r for r in rows if r["task"] == "flan"]
    assert [r["budget"] for r in flan] == list(BUDGETS)  # every ratio, largest first
    assert {r["variant"] for r in rows} == {"in-sample"}
    reference = evaluate([load_benchmark("flan")], methods=METHODS, budgets=BUDGETS,
                         target=TARGET)
    for row in flan:
        scores = {m: reference.get("flan", m, row["budget"]).relacc for m in METHODS}
        assert row["ceiling"] == max(scores.values())
        assert row["reached_by"] == [m for m in METHODS if scores[m] == row["ceiling"]]
    # the FLOPs share of training everyone on the whole ladder up to the budget
    shares = {r["ratio"]: round(r["flops_percent"], 2) for r in flan}
    assert shares["1/128"] == 1.55 and shares["1/64"] == 3.11


def test_noise_rows_average_each_seeds_best() -> None:
    rows, _ = CEILING.ceiling_rows("lin2024", noise=0.02, seeds=2, methods=["ats", "vanilla"])
    noisy = [r for r in rows if r["variant"] == "noise 2 %"]
    assert len(noisy) == 21
    for row in noisy:
        assert row["ceiling"] >= max(row["by_method"].values()) - 1e-9


def test_a_method_the_suite_cannot_serve_is_left_out_with_its_own_reason() -> None:
    rows, skipped = CEILING.ceiling_rows("lin2024", noise=0.0, methods=["ats", "nlpmetrics"])
    assert len(skipped) == 1 and skipped[0].startswith(
        "skipped nlpmetrics: flan: model 'MBZUAI/LaMini-GPT-124M' has no pl_alpha measurement")
    assert all(list(r["by_method"]) == ["ats"] for r in rows)
