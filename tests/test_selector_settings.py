"""Declared selector settings: the method[key=value] syntax, get/set_params, labels,
validation messages; and `lensllm fit --law lensllm` deciding as the selector does."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lensllm
from lensllm.cli import main
from lensllm.core.curves import Curve, CurveSet, NTKSpectrum
from lensllm.core.selectors import SELECTORS, AtS, LensLLMPaperFit, make_selector
from lensllm.core.selectors.pooled import PooledSettings, pooled_lensllm_predict
from lensllm.core.selectors.settings import parse_value
from lensllm.errors import InputError

GAMMA = ("2", 2.0, "-1", "{m}: interval_gamma must be a number >= 0, got -1")

# method -> setting -> (value as written, value it builds, out-of-range value, message)
CASES: dict[str, dict[str, tuple]] = {
    "zeroshot": {}, "subset-loss": {}, "model-size": {},
    "vanilla": {"interval_gamma": GAMMA},
    "rectified": {"interval_gamma": GAMMA},
    "ats": {
        "k": ("4", 4, "1", "ats: k must be a whole number >= 2, got 1"),
        "delta": ("2.5", 2.5, "0", "ats: delta must be a number > 0, got 0"),
        "interval_gamma": GAMMA,
    },
    "lensllm-paper": {
        "interval_gamma": GAMMA,
        "mode": ("fit-t", "fit-t", "exact",
                 "lensllm-paper: mode must be one of measured, fit-t, got 'exact'"),
    },
    "nlpmetrics": {
        "metric": ("e_tpl_lambda", "e_tpl_lambda", "pl_beta",
                   "nlpmetrics: metric must be one of pl_alpha, e_tpl_lambda, got 'pl_beta'"),
    },
    "lensllm": {
        "recency": ("(0.5,2)", (0.5, 2.0), "0", "lensllm: recency must be numbers > 0, one or "
                    "several as (a,b,...), got 0"),
        "outlier_z": ("2", 2.0, "-1", "lensllm: outlier_z must be a number >= 0, got -1"),
        "min_points": ("5", 5, "2", "lensllm: min_points must be a whole number >= 3, got 2"),
        "ats_k": ("4", 4, "1", "lensllm: ats_k must be a whole number >= 2, got 1"),
        "ats_delta": ("2.5", 2.5, "0", "lensllm: ats_delta must be a number > 0, got 0"),
        "beta_bounds": ("(0.05,1)", (0.05, 1.0), "(1,0.5)", "lensllm: beta_bounds must be "
                        "two numbers (lo,hi) with 0 < lo < hi, got (1,0.5)"),
        "log_knee_bounds": ("(1,20)", (1.0, 20.0), "(5,5)", "lensllm: log_knee_bounds must "
                            "be two numbers (lo,hi) with lo < hi, got (5,5)"),
        "beta_grid": ("30", 30, "4", "lensllm: beta_grid must be a whole number >= 5, got 4"),
        "knee_grid": ("30", 30, "4", "lensllm: knee_grid must be a whole number >= 5, got 4"),
        "evidence_prior": ("3", 3.0, "-1", "lensllm: evidence_prior must be a number >= 0, "
                           "got -1"),
        "ntk_prior": ("4", 4.0, "-0.5", "lensllm: ntk_prior must be a number >= 0, got -0.5"),
        "interval_gamma": GAMMA,
    },
}
ROWS = [(m, k, *case) for m, settings in CASES.items() for k, case in settings.items()]


def test_every_declared_setting_has_a_case():
    assert set(CASES) == set(SELECTORS)
    for name, cls in SELECTORS.items():
        assert [s.name for s in cls.settings] == list(CASES[name]), name
        assert all(s.help for s in cls.settings)


@pytest.mark.parametrize("method, key, written, value, bad, message", ROWS,
                         ids=[f"{m}-{k}" for m, k, *_ in ROWS])
def test_method_spec_sets_validates_and_labels(method, key, written, value, bad, message):
    defaults = SELECTORS[method]().get_params()
    sel = make_selector(f"{method}[{key}={written}]")
    assert sel.get_params() == {**defaults, key: value}
    assert getattr(sel, key) == value
    assert sel.label == f"{method}[{key}={written}]"
    assert make_selector(sel.label).get_params() == sel.get_params()
    with pytest.raises(InputError) as info:
        make_selector(f"{method}[{key}={bad}]")
    assert str(info.value) == message.format(m=method)
    # set_params validates the same way, and returns the selector
    fresh = SELECTORS[method]()
    assert fresh.set_params(**{key: value}) is fresh and fresh.get_params() == sel.get_params()
    with pytest.raises(InputError) as info:
        fresh.set_params(**{key: parse_value(bad)})
    assert str(info.value) == message.format(m=method)


def test_labels_show_the_settings_given():
    assert make_selector("ats").label == "ats"
    assert make_selector("ats[k=3,delta=5]").label == "ats[k=3,delta=5]"  # as written
    assert make_selector("ats[delta=2.0,k=4]").label == "ats[delta=2,k=4]"
    assert AtS(k=4).label == "ats[k=4]"
    sel = AtS()
    sel.delta = 2  # assignment goes through set_params
    assert sel.label == "ats[delta=2]" and sel.delta == 2.0
    with pytest.raises(InputError, match="ats: delta must be a number > 0"):
        sel.delta = -1
    with pytest.raises(InputError, match="method 'ats' has no option depth; its options"):
        AtS(depth=3)
    # options given with an instance change a copy
    base = AtS()
    assert make_selector(base, k=5).k == 5 and base.k == 3


def test_lensllm_options_work():
    sel = make_selector("lensllm[recency=1]")
    assert sel.pooled == PooledSettings(recency=1.0) and sel.label == "lensllm[recency=1]"
    flan = lensllm.load_benchmark("flan")
    got = lensllm.select(flan, "lensllm", outlier_z=2, budget=25600, target=1638400,
                         uncertainty=False)
    want = pooled_lensllm_predict([(flan, 25600, 1638400)], PooledSettings(outlier_z=2))[0]
    assert got.method == "lensllm[outlier_z=2]"
    np.testing.assert_array_equal(got.predicted, want.predicted)


# ------------------------------------------------------------- lensllm fit --law lensllm

SIZES = 200 * 2 ** np.arange(8)


def ntk_curves() -> CurveSet:
    lam = np.geomspace(1e-3, 10.0, 12)
    a = np.linspace(1.0, 0.1, 12)
    curves = []
    for model, steps, scale in (("timed", 300.0, 1.0), ("untimed", None, 1.2)):
        losses = scale * (3.0 * 2000.0**0.5 / (2000.0**0.5 + SIZES**0.5) + 1.0)
        curves.append(Curve(model, SIZES, losses, zero_shot=4.0 * scale,
                            ntk=NTKSpectrum(lam, a, 0.01, steps=steps)))
    return CurveSet(curves, task="ntk")


@pytest.fixture
def ntk_file(tmp_path):
    path = tmp_path / "ntk.json"
    path.write_text(json.dumps(ntk_curves().to_json()))
    return path


def run_cli(capsys, *args: str) -> str:
    capsys.readouterr()
    main(list(args))
    return capsys.readouterr().out


@pytest.mark.parametrize("model, mode", [("timed", "measured"), ("untimed", "fit-t")])
def test_fit_lensllm_law_fits_as_the_selector_does(capsys, ntk_file, model, mode):
    """A curve with NTK data but no step count: fit falls back to fitting t, exactly as
    the lensllm-paper selector does (they share one decision)."""
    out = json.loads(run_cli(capsys, "fit", str(ntk_file), "--model", model, "--law",
                             "lensllm", "--budget", "12800", "--format", "json"))
    curves = ntk_curves()
    sel = LensLLMPaperFit().select(curves, 12800, out["target"])
    fit = sel.details["fits"][curves.models.index(model)]
    assert out["law"] == "lensllm" and out["points"] == 8  # zero-shot + 7 sizes
    assert out["params"] == {k: float(v) for k, v in fit.params.items()}
    assert (out["params"]["t"] == 300.0) == (mode == "measured")
    text = run_cli(capsys, "fit", str(ntk_file), "--model", model, "--law", "lensllm",
                   "--budget", "12800")
    assert ("t is fitted (mode fit-t" in text) == (mode == "fit-t")


def test_fit_lensllm_law_without_ntk_is_the_rectified_law(capsys, tmp_path):
    path = tmp_path / "flan.csv"
    path.write_text(lensllm.load_benchmark("flan").to_wide_csv())
    text = run_cli(capsys, "fit", str(path), "--model", "gpt2", "--law", "lensllm",
                   "--budget", "51200")
    assert "rectified law (asked for lensllm) on 10 points (sizes <= 51,200)" in text
    assert "note: no NTK data for this model" in text
