"""``lensllm bench --suite`` in every mode on a suite folder in the zoo's layout (the
files ``lensllm suite build`` exports: sizes 16 ... 2,048 and the target 4,096, eight
candidates, tokens per example in ``<task>.runs.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensllm.cli import main
from lensllm.core.suites import load_suite
from zoo_suite import MODELS, SIZES, TARGET, TASKS, write_suite

BUDGETS = {TARGET // k for k in (8, 16, 32, 64)}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> str:
    return str(write_suite(tmp_path_factory.mktemp("zoo") / "suite"))


def _bench(capsys, *args: str) -> str:
    main(["bench", *args])
    return capsys.readouterr().out


def test_the_fixture_is_what_the_suite_loader_reads(suite: str) -> None:
    loaded = load_suite(suite)
    assert loaded.target == TARGET and set(loaded.budgets) == BUDGETS
    assert [c.task for c in loaded.curve_sets] == list(TASKS)
    assert all(len(c) == MODELS for c in loaded.curve_sets)
    assert all(list(curve.sizes) == [*SIZES, TARGET] for c in loaded.curve_sets for curve in c)
    assert set(loaded.tokens_per_example) == set(TASKS)


def test_default_mode(suite: str, capsys) -> None:
    cells = json.loads(_bench(capsys, "--suite", suite, "--format", "json"))
    assert {(c["task"], c["budget"]) for c in cells} == {(t, b) for t in TASKS
                                                         for b in BUDGETS}
    assert {"lensllm", "ats", "rectified", "zeroshot"} <= {c["method"] for c in cells}
    table = _bench(capsys, "--suite", suite, "--methods", "ats,lensllm")
    assert all(f"RelAcc x100 -- {t}" in table for t in TASKS)
    assert "1/64" in table and "1/128" not in table


def test_calibration(suite: str, capsys) -> None:
    cells = json.loads(_bench(capsys, "--suite", suite, "--calibration", "--methods",
                              "lensllm,ats", "--format", "json"))
    assert {(c["method"], c["budget"]) for c in cells} == {
        (m, b) for m in ("lensllm", "ats") for b in BUDGETS}
    # target/64 = 64 leaves three sizes: nothing to back-test an interval on, so no
    # interval is stated -- null, not a coverage of 0
    stated = [c for c in cells if c["budget"] != TARGET // 64]
    assert all(0 <= c["coverage"] <= 100 and c["mean_width"] > 0 for c in stated)
    assert all(c["coverage"] is None and c["mean_width"] is None for c in cells
               if c["budget"] == TARGET // 64)
    table = _bench(capsys, "--suite", suite, "--calibration")
    assert "coverage of the 90 % interval (x100) -- lensllm" in table
    row = next(line for line in table.splitlines() if line.startswith("1/64"))
    assert row.split() == ["1/64", "-", "-", "-"]
    assert table.rstrip().endswith("no interval at 1/64: too few sizes under the budget to "
                                   "back-test one")


def test_adaptive(suite: str, capsys) -> None:
    out = json.loads(_bench(capsys, "--suite", suite, "--adaptive", "--flops-budgets",
                            "0.05,0.1", "--format", "json"))
    assert [r["budget"] for r in out["adaptive"]] == [0.05, 0.1]
    assert all(set(r["flops"]) == set(TASKS) and max(r["flops"].values()) <= r["budget"]
               for r in out["adaptive"])
    assert {f["budget"] for f in out["fixed"] if f["label"].startswith("ats")} == BUDGETS
    assert {f["budget"] for f in out["fixed"]} <= set(SIZES)


def test_robustness_takes_other_targets_from_the_suite_sizes(suite: str, capsys) -> None:
    """Other targets target/2 and target/4 are the suite's own sizes 2,048 and 1,024,
    each with its budgets target'/8 ... down to the last that leaves three sizes; the
    model-subset variants (10 and 20 of lin2024's 30) are skipped, saying why."""
    out = json.loads(_bench(capsys, "--suite", suite, "--robustness", "--flops-budgets",
                            "0.05", "--format", "json"))
    variants = {v["variant"]: v for v in out["variants"] if v["method"] == "lensllm"}
    assert list(variants) == ["in-sample", "noise 1 %", "noise 2 %", "target 2,048",
                              "target 1,024"]
    # 2,048: budgets 256, 128, 64 (32 leaves two sizes); 1,024: 128, 64
    assert variants["target 2,048"]["cells"] == 3 * len(TASKS)
    assert variants["target 1,024"]["cells"] == 2 * len(TASKS)
    assert out["skipped"] == [
        "10 models: every task has 10 candidates or fewer (the most: 8)",
        "20 models: every task has 20 candidates or fewer (the most: 8)"]
    assert {r["variant"] for r in out["adaptive"]} == {"in-sample", "noise 2 %"}
    table = _bench(capsys, "--suite", suite, "--robustness", "--flops-budgets", "0.05")
    assert "skipped: 10 models: every task has 10 candidates or fewer (the most: 8)" in table
    assert "target 1,024" in table and "adaptive search" in table


def test_robustness_skips_a_target_some_model_lacks(suite: str, tmp_path: Path,
                                                    capsys) -> None:
    import shutil

    folder = tmp_path / "gap"
    shutil.copytree(suite, folder)
    task = next(iter(TASKS))
    data = json.loads((folder / f"{task}.json").read_text())
    curve = data["curves"][0]
    curve["points"] = [p for p in curve["points"] if p[0] != 1024]  # a failed run
    (folder / f"{task}.json").write_text(json.dumps(data))
    out = json.loads(_bench(capsys, "--suite", str(folder), "--robustness",
                            "--flops-budgets", "0.05", "--format", "json"))
    assert (f"target 1,024: not every model of task {task} has a measured loss at 1,024"
            in out["skipped"])
    assert "target 2,048" in {v["variant"] for v in out["variants"]}
    # "train everyone at size s" leaves out the size one model lacks, instead of failing
    assert out["adaptive"]
