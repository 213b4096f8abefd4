"""The bundled benchmark and the reproduction of Lin et al. (ICML 2024), Table 1."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from lensllm.core.benchmark import BUDGETS, TARGET, TASKS, load_benchmark
from lensllm.core.evaluation import evaluate

# Lin et al., Table 1 (ratios 1/8 ... 1/512); a single number = the same at every ratio.
PUBLISHED = {
    ("flan", "ats"): ([90.9, 73.1, 65.5, 61.1, 52.2, 50.5, 45.6],
                      [93.6, 93.2, 93.2, 93.2, 85.3, 93.2, 93.2]),
    ("wmt19", "ats"): ([98.9, 97.0, 97.7, 86.0, 78.0, 73.4, 61.5],
                       [99.1, 99.1, 99.6, 99.1, 99.1, 99.1, 99.1]),
    ("gigaword", "ats"): ([98.9, 97.6, 96.9, 92.0, 91.1, 89.1, 91.0],
                          [100, 91.4, 94.3, 100, 94.3, 94.3, 91.4]),
    ("flan", "zeroshot"): (-10.7, 85.3),
    ("wmt19", "zeroshot"): (7.1, 84.4),
    ("gigaword", "zeroshot"): (-49.2, 71.3),
    ("flan", "subset-loss"): ([60.9, 46.5, 36.4, 29.0, 24.6, 20.9, 16.4],
                              [93.2, 93.2, 93.2, 93.2, 59.6, 59.6, 59.6]),
    ("wmt19", "subset-loss"): ([93.5, 87.1, 77.7, 64.5, 51.7, 41.6, 34.5], 99.1),
    ("gigaword", "subset-loss"): ([93.2, 89.3, 85.4, 80.9, 76.2, 69.9, 64.8],
                                  [87.6, 87.6, 87.6, 71.3, 71.3, 71.3, 71.3]),
    ("flan", "model-size"): (-20.9, 59.6),
    ("wmt19", "model-size"): (36.0, 22.5),
    ("gigaword", "model-size"): (-24.4, 71.3),
}


def test_bundled_benchmark_equals_the_public_csvs(shared_benchmark):
    for task in TASKS:
        bundled = load_benchmark(task)
        with open(shared_benchmark / f"{task}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert bundled.models == [r["config name"] for r in rows]
        for row in rows:
            curve = bundled[row["config name"]]
            assert curve.zero_shot == float(row["0"])
            assert curve.params == float(row["size"]) and curve.family == row["family"]
            sizes = [k for k in row if k.isdigit() and k != "0"]
            np.testing.assert_array_equal(curve.sizes, [int(k) for k in sizes])
            np.testing.assert_array_equal(curve.losses, [float(row[k]) for k in sizes])


def test_benchmark_shape():
    for task in TASKS:
        curves = load_benchmark(task)
        assert len(curves) == 30
        assert all(len(c) == 14 and c.zero_shot is not None for c in curves)


@pytest.fixture(scope="module")
def table1():
    methods = ["zeroshot", "subset-loss", "model-size", "ats"]
    return evaluate([load_benchmark(t) for t in TASKS], methods=methods, budgets=BUDGETS,
                    target=TARGET)


@pytest.mark.parametrize("task, method", sorted(PUBLISHED))
def test_reproduces_lin_et_al_table1(table1, task, method):
    pear, rel = (np.broadcast_to(np.asarray(v, dtype=float), (7,)) for v in
                 PUBLISHED[(task, method)])
    got_pear = [table1.get(task, method, b).pearcorr for b in BUDGETS]
    got_rel = [table1.get(task, method, b).relacc for b in BUDGETS]
    # The paper prints one decimal; ±0.1 covers its rounding (WMT19 AtS 1/16: 97.06).
    np.testing.assert_allclose(got_pear, pear, atol=0.1 + 1e-9)
    np.testing.assert_allclose(got_rel, rel, atol=0.1 + 1e-9)


def test_default_lensllm_beats_ats_on_the_benchmark():
    """The claim of the default method, checked cell by cell (settings: pooled.py).

    The margin was 4 points before the evidence prior (chosen for robustness by the
    rule in benchmarks/tune_evidence_prior.py) shrank the fit toward AtS: 83.1 vs 80.4.
    """
    ev = evaluate([load_benchmark(t) for t in TASKS], methods=["ats", "lensllm"],
                  budgets=BUDGETS, target=TARGET)
    assert ev.mean("lensllm", "pearcorr") > ev.mean("ats", "pearcorr") + 2.5
    assert ev.mean("lensllm", "relacc") >= ev.mean("ats", "relacc")
    for task in TASKS:
        for budget in BUDGETS:
            ours, ats = ev.get(task, "lensllm", budget), ev.get(task, "ats", budget)
            assert ours.pearcorr >= ats.pearcorr - 1.0, (task, budget)
            assert ours.relacc >= ats.relacc - 1.0, (task, budget)
