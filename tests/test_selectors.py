"""Selectors: AtS phase detection, baselines, law fits, method specs, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lensllm
from lensllm.core.evaluation import mape, pearcorr, relacc, rmse
from lensllm.core.formats import parse_curves
from lensllm.core.selectors import AtS, make_selector, split_methods
from lensllm.core.selectors.ats import power_phase_start
from lensllm.errors import InputError

SIZES = 200 * 2 ** np.arange(8)


def curve_file(rows: dict[str, list[float]], zero: dict[str, float] | None = None,
               params: dict[str, int] | None = None) -> lensllm.CurveSet:
    header = "model,0," + ",".join(str(s) for s in SIZES) + ",size\n"
    body = ""
    for name, losses in rows.items():
        z = "" if zero is None else str(zero[name])
        p = "" if params is None else str(params[name])
        body += f"{name},{z}," + ",".join(f"{v!r}" for v in losses) + f",{p}\n"
    return parse_curves(header + body, source="toy.csv")


def power(b: float, beta: float, e: float = 0.0) -> list[float]:
    return [float(v) for v in b * SIZES.astype(float) ** -beta + e]


def rectified(gap: float, beta: float, d0: float, e: float, n) -> np.ndarray:
    """gap = zero-shot loss minus E; the curve bends around n = d0."""
    return gap * d0**beta / (d0**beta + np.asarray(n, dtype=float) ** beta) + e


def test_power_phase_detection_stops_at_the_bend():
    log_n = np.log(SIZES.astype(float))
    wiggle = 0.004 * (-1.0) ** np.arange(SIZES.size)  # residual scale σ ≈ 0.004
    straight = np.log(power(10, 0.3)) + wiggle
    bent = straight.copy()
    bent[:2] = straight[2] + 0.01  # a flat pre-power phase at the two smallest sizes
    assert power_phase_start(log_n, bent, k=3, delta=5) == 2
    # a clean power law is accepted down to the second point (reference behaviour)
    assert power_phase_start(log_n, straight, k=3, delta=5) == 1
    assert power_phase_start(log_n[:3], straight[:3], k=3) == 0


def test_ats_extrapolates_a_pure_power_law_exactly():
    curves = curve_file({"a": power(10, 0.3), "b": power(8, 0.25)})
    sel = lensllm.select(curves, "ats", budget=25600, target=409600)
    assert sel.predicted[0] == pytest.approx(10 * 409600**-0.3, rel=1e-9)
    assert sel.chosen == "a"


def test_ranking_objects():
    curves = curve_file({"a": power(10, 0.3), "b": power(8, 0.25), "c": power(5, 0.1)},
                        zero={"a": 5, "b": 4, "c": 3}, params={"a": 10, "b": 30, "c": 20})
    zs = lensllm.select(curves, "zeroshot", budget=800, target=25600)
    assert zs.chosen == "c" and list(zs.ranks) == [3, 2, 1]
    ms = lensllm.select(curves, "model-size", budget=800, target=25600)
    assert ms.chosen == "b" and ms.scores[1] == pytest.approx(math.log(30))
    sub = lensllm.select(curves, "subtuning", budget=800, target=25600)
    assert sub.method == "subset-loss" and sub.details["size"] == 800
    frame = lensllm.select(curves, "ats", budget=3200, target=25600).to_frame()
    assert list(frame.columns) == ["rank", "model", "score", "predicted", "lower", "upper",
                                   "p_best"]
    assert frame["p_best"].sum() == pytest.approx(1.0)
    assert (frame["lower"] <= frame["predicted"]).all()
    assert (frame["predicted"] <= frame["upper"]).all()
    assert list(frame["rank"]) == [1, 2, 3]


def test_law_fit_selectors_predict_known_curves():
    target = 409600
    pure = curve_file({"a": power(10, 0.3, 1.0), "b": power(30, 0.5, 1.2)})
    sel = lensllm.select(pure, "vanilla", budget=25600, target=target)
    assert sel.predicted == pytest.approx([10 * target**-0.3 + 1.0, 30 * target**-0.5 + 1.2],
                                          rel=1e-3)
    laws = {"a": (3.0, 0.5, 2000.0, 1.0), "b": (2.0, 0.7, 500.0, 1.3)}
    bent = curve_file({m: [float(v) for v in rectified(*p, SIZES)] for m, p in laws.items()},
                      zero={m: float(rectified(*p, 0)) for m, p in laws.items()})
    for method in ("rectified", "lensllm-paper"):
        sel = lensllm.select(bent, method, budget=25600, target=target)
        truth = [float(rectified(*laws[m], target)) for m in ("a", "b")]
        assert sel.predicted == pytest.approx(truth, rel=1e-3), method
        assert len(sel.details["fits"]) == 2


def test_method_specs():
    sel = make_selector("ats[k=4,delta=2.5]")
    assert isinstance(sel, AtS) and (sel.k, sel.delta) == (4, 2.5)
    assert sel.label == "ats[k=4,delta=2.5]"
    assert split_methods("ats[k=4,delta=2],lensllm, zeroshot") == [
        "ats[k=4,delta=2]", "lensllm", "zeroshot"]


@pytest.mark.parametrize("call, message", [
    (lambda c: lensllm.select(c, "magic", budget=800, target=3200),
     "unknown method 'magic'; choose from zeroshot, subset-loss, model-size, vanilla, "
     "rectified, ats, lensllm, lensllm-paper, nlpmetrics, subtuning, zero-shot, modelsize"),
    (lambda c: lensllm.select(c, "ats", budget=3200, target=3200),
     "budget (3200) must be smaller than the target (3200): the point is to predict the "
     "loss at a data size you have not trained on"),
    (lambda c: lensllm.select(c, "ats", budget=-5, target=3200),
     "budget must be a positive number of examples, got -5"),
    (lambda c: lensllm.select(c, "ats", budget=400, target=3200),
     "toy: model 'a' has 2 measured size(s) <= budget 400 (200, 400); the ats method needs "
     "at least 3"),
    (lambda c: lensllm.select(c, "zeroshot", budget=800, target=3200),
     "toy: model 'a' has no zero-shot loss (size 0); the zeroshot method needs it"),
    (lambda c: lensllm.select(c, "rectified", budget=800, target=3200),
     "toy: model 'a' has no zero-shot loss (size 0); the rectified method needs it"),
    (lambda c: lensllm.select(c, "model-size", budget=800, target=3200),
     "toy: model 'a' has no parameter count; the model-size method needs it (column 'size' "
     "in wide files, 'params' in long files)"),
    (lambda c: lensllm.select(c, "ats[k=1]", budget=800, target=3200),
     "ats: k must be a whole number >= 2, got 1"),
    (lambda c: lensllm.select(c, "ats[depth=3]", budget=800, target=3200),
     "method 'ats' has no option depth; its options are k, delta, interval_gamma"),
    (lambda c: lensllm.select(c, "zeroshot[x=1]", budget=800, target=3200),
     "method 'zeroshot' has no option x; it takes no options"),
    (lambda c: lensllm.select(c, "ats[k]", budget=800, target=3200),
     "method 'ats[k]': options are written key=value"),
    (lambda c: lensllm.evaluate(c, methods=["ats"], budgets=[800], target=3200 * 64),
     "toy: model 'a' has no measured loss at size 204800; evaluation needs every model's "
     "true loss at the target"),
    (lambda c: lensllm.evaluate(c, methods=["ats", "ats"], budgets=[800], target=25600),
     "a method is listed twice: ats, ats"),
])
def test_bad_selection_inputs(call, message):
    curves = curve_file({"a": power(10, 0.3), "b": power(8, 0.25)})
    with pytest.raises(InputError) as info:
        call(curves)
    assert str(info.value) == message


def test_metrics_definitions():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    assert relacc(1.0, truth) == 100.0 and relacc(4.0, truth) == 0.0
    assert relacc(2.0, truth) == pytest.approx(100 * 2 / 3)
    assert pearcorr(truth * 2 + 1, truth) == pytest.approx(100.0)
    assert pearcorr(-truth, truth) == pytest.approx(-100.0)
    assert math.isnan(pearcorr(np.ones(4), truth))
    assert rmse(truth + 0.5, truth) == pytest.approx(0.5)
    assert mape(truth * 1.1, truth) == pytest.approx(10.0)


def test_same_inputs_same_ranking():
    curves = lensllm.load_benchmark("wmt19")
    first = lensllm.select(curves, "rectified", budget=12800, target=1638400)
    second = lensllm.select(curves, "rectified", budget=12800, target=1638400)
    assert first.chosen == second.chosen
    np.testing.assert_array_equal(first.scores, second.scores)


def test_nlpmetrics_ranks_by_the_weight_spectrum_metric():
    import json

    curves = {"task": "t", "curves": [
        {"model": m, "points": [[200, 3.0], [400, 2.8], [800, 2.6]], "metrics": {"pl_alpha": a}}
        for m, a in (("a", 4.0), ("b", 2.5), ("c", 3.0))]}
    cs = parse_curves(json.dumps(curves))
    sel = lensllm.select(cs, "nlpmetrics", budget=800, target=3200)
    assert sel.chosen == "b" and list(sel.ranks) == [3, 1, 2] and sel.p_best is None
    assert cs.to_json()["curves"][0]["metrics"] == {"pl_alpha": 4.0}
    with pytest.raises(InputError) as info:
        lensllm.select(cs, "nlpmetrics[metric=e_tpl_lambda]", budget=800, target=3200)
    assert str(info.value) == (
        "t: model 'a' has no e_tpl_lambda measurement; the nlpmetrics method needs "
        "weight-spectrum metrics, which lensllm run measures with method: "
        "nlpmetrics[metric=e_tpl_lambda] (or --verify, for pl_alpha) when the nlpmetrics "
        "extra (weightwatcher) is installed")
