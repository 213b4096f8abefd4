"""The suites shipped as package data: what they hold, and the README's figures.

``zoo`` (4 tasks, step cap 256) and ``zoo-uncapped`` (wordnet-gloss, foldoc; no cap) were
made by ``lensllm suite build`` from the same cached candidates; their runs up to 512
examples never reached the cap, so they must agree there exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensllm.cli import main
from lensllm.core.suites import load_suite

ZOO_TASKS = ["python-docs", "foldoc", "foldoc-terms", "wordnet-gloss"]
GRID = [16, 32, 64, 128, 256, 512, 1024, 2048]


@pytest.mark.parametrize("name, tasks", [("zoo", ZOO_TASKS),
                                         ("zoo-uncapped", ["wordnet-gloss", "foldoc"])])
def test_packaged_suite_holds_eight_candidates_with_spectra(name: str, tasks) -> None:
    suite = load_suite(name)
    assert suite.target == 4096 and sorted(suite.budgets) == [64, 128, 256, 512]
    assert sorted(c.task for c in suite.curve_sets) == sorted(tasks)
    for curves in suite.curve_sets:
        assert len(curves) == 8
        for curve in curves:
            assert list(curve.sizes) == [*GRID, 4096] and curve.zero_shot is not None
            assert np.all(np.isfinite(curve.losses)) and np.all(curve.losses > 0)
            assert curve.ntk is not None
        assert suite.tokens_per_example[curves.task] > 0


@pytest.mark.parametrize("task", ["wordnet-gloss", "foldoc"])
def test_uncapped_runs_repeat_the_capped_suite_below_the_cap(task: str) -> None:
    capped = load_suite("zoo", [task]).curve_sets[0]
    uncapped = load_suite("zoo-uncapped", [task]).curve_sets[0]
    assert sorted(capped.models) == sorted(uncapped.models)
    for model in capped.models:
        assert uncapped[model].zero_shot == pytest.approx(capped[model].zero_shot, rel=1e-9)
        for size in [16, 32, 64, 128, 256, 512]:
            assert uncapped[model].loss_at(size) == pytest.approx(
                capped[model].loss_at(size), rel=1e-9), (model, size)
        # from 1,024 up the cap of 256 steps bound: longer runs, lower losses
        assert uncapped[model].loss_at(4096) < capped[model].loss_at(4096)


def _means(capsys, suite: str, methods: str) -> dict[str, tuple[float, float]]:
    main(["bench", "--suite", suite, "--methods", methods, "--format", "json"])
    cells = json.loads(capsys.readouterr().out)
    out = {}
    for method in methods.split(","):
        mine = [c for c in cells if c["method"] == method]
        out[method] = (round(float(np.mean([c["pearcorr"] for c in mine])), 1),
                       round(float(np.mean([c["relacc"] for c in mine])), 1))
    return out


def test_bench_reproduces_the_readme_zoo_selection_means(capsys) -> None:
    # README, "The hub zoo and the zoo suite": PearCorr / RelAcc over the 16 cells
    assert _means(capsys, "zoo", "lensllm,ats,subset-loss,rectified") == {
        "lensllm": (73.1, 83.0), "ats": (73.6, 83.0), "subset-loss": (91.7, 100.0),
        "rectified": (65.9, 80.6)}
