"""Curve data model, the three file formats, and validation messages."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lensllm.core.curves import Curve, CurveSet, NTKSpectrum
from lensllm.core.formats import load_curves, parse_curves
from lensllm.errors import InputError

WIDE = """config name,0,200,400,800,1600,size,family
a,4.0,3.0,2.8,2.6,2.5,1000,x
b,3.5,3.2,3.0,2.7,2.4,2000,y
"""


def test_wide_csv_loads_with_zero_shot_params_family():
    cs = parse_curves(WIDE, source="t.csv")
    assert cs.task == "t" and cs.models == ["a", "b"]
    a = cs["a"]
    assert a.zero_shot == 4.0 and a.params == 1000 and a.family == "x"
    np.testing.assert_array_equal(a.sizes, [200, 400, 800, 1600])
    np.testing.assert_array_equal(a.losses, [3.0, 2.8, 2.6, 2.5])
    assert a.loss_at(800) == 2.6 and a.loss_at(0) == 4.0 and a.loss_at(3200) is None


def test_empty_wide_cell_means_not_measured():
    cs = parse_curves("model,200,400,800\na,3,,2\n", source="t.csv")
    np.testing.assert_array_equal(cs["a"].sizes, [200, 800])
    assert cs["a"].zero_shot is None


def test_long_format_and_round_trips(tmp_path):
    cs = parse_curves(WIDE, source="t.csv")
    long_text = "model,n,loss,params,family\n" + "".join(
        f"{r['model']},{r['n']},{r['loss']},{int(r['params'])},{r['family']}\n"
        for r in cs.to_records())
    again = parse_curves(long_text, source="t.csv")
    assert again.models == cs.models
    for c1, c2 in zip(cs, again, strict=True):
        np.testing.assert_array_equal(c1.sizes, c2.sizes)
        np.testing.assert_array_equal(c1.losses, c2.losses)
        assert (c1.zero_shot, c1.params, c1.family) == (c2.zero_shot, c2.params, c2.family)
    wide_again = parse_curves(cs.to_wide_csv(), source="t.csv")
    np.testing.assert_array_equal(wide_again["b"].losses, cs["b"].losses)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cs.to_json()))
    from_json = load_curves(path)
    assert from_json.task == "t" and from_json["a"].zero_shot == 4.0


def test_json_carries_ntk():
    data = {"task": "demo", "curves": [{
        "model": "m", "points": [[200, 3.0], [400, 2.9], [800, 2.7]], "zero_shot": 3.5,
        "ntk": {"eigenvalues": [2.0, 1.0], "projections": [0.5, 0.25],
                "learning_rate": 0.01, "steps": 40}}]}
    cs = parse_curves(json.dumps(data))
    ntk = cs["m"].ntk
    assert isinstance(ntk, NTKSpectrum) and ntk.steps == 40.0
    assert cs.to_json()["curves"][0]["ntk"]["projections"] == [0.5, 0.25]


def test_long_format_with_several_tasks():
    text = "task,model,n,loss\nx,a,200,3\nx,a,400,2\ny,a,200,5\n"
    with pytest.raises(InputError, match="several tasks"):
        parse_curves(text, source="f.csv")
    assert len(parse_curves(text, source="f.csv", task="y")["a"]) == 1


# Malformed files whose exact message only this file pins: (text, message).  The faults
# that the command-line matrix (test_bad_inputs.py) also covers are in SEEN_FROM_THE_CLI.
BAD_INPUTS = [
    ("config name,0,200,400\na,3,inf,2\n",
     "t.csv: model 'a', column '200': loss is infinite; losses must be finite and > 0"),
    ("config name,0,200,400\na,3,0,2\n",
     "t.csv: model 'a', column '200': loss 0 is <= 0; losses must be finite and > 0"),
    ("config name,0,200,400\na,3,abc,2\n",
     "t.csv: model 'a', column '200': loss 'abc' is not a number"),
    ("config name,0,200,200\na,3,2,2\n", "t.csv: data size 200 appears in two columns"),
    ("config name,0,200.5\na,3,2\n",
     "t.csv: column '200.5': '200.5' is not a data size (a whole number of examples)"),
    ("config name,0,-200\na,3,2\n",
     "t.csv: column '-200': '-200' is not a data size (a whole number of examples)"),
    ("name,0,200\na,3,2\n",
     "t.csv: the first column must be 'config name' or 'model' (found 'name')"),
    ("config name,0,200\na,3,2\na,3,2\n", "t: model 'a' appears twice"),
    ("config name,0,200\na,3\n", "t.csv: line 2 has 2 fields, the header has 3"),
    ("config name,0,200\n,3,2\n", "t.csv: line 2 has an empty model name"),
    ("config name,0,200,size\na,3,2,big\n",
     "t.csv: model 'a', column 'size': 'big' is not a parameter count"),
    ("config name,0,200,size\na,3,2,-5\n",
     "t.csv: model 'a', column 'size': parameter count must be > 0"),
    ("config name,size,family\na,3,x\n",
     "t.csv: no data-size columns (expected headers like 0, 200, 400)"),
    ("model,n,loss\na,200,3\na,200,2\n", "t.csv: model 'a' has two losses for size 200"),
    ("model,n,loss\na,200,3\na,400,nan\n",
     "t.csv: line 3: model 'a', column 'loss': loss is NaN; losses must be finite and > 0"),
    ("n,loss\n200,3\n",
     "t.csv: no column 'model'; a long-format file has columns model, n, loss and "
     "optionally params, family, task"),
    ("model,n,loss\na,x,3\n",
     "t.csv: line 2, column 'n': 'x' is not a data size (a whole number of examples)"),
    ("model,n,loss,params\na,200,3,10\na,400,2,20\n",
     "t.csv: model 'a' has two different 'params' values"),
    ("model,n,loss,params\na,200,3,nan\na,400,2,nan\n",
     "t.csv: model 'a', column 'params': parameter count must be > 0"),
    ('{"curves": [{"model": "a", "points": [[200, 3, 4]]}]}',
     "t.csv: curves[0]: 'points' must be a list of [n, loss] pairs"),
    ('{"curves": [{"model": "a", "points": [[200, 3]], "zero_shot": -1}]}',
     "t.csv: model 'a', column 'zero_shot': loss -1 is <= 0; losses must be finite and > 0"),
    ('{"curves": [{"model": "a", "points": [[200, 3]], "family": 7}]}',
     "t.csv: curves[0]: 'family' must be a string"),
    ('{"curves": [{"model": "a", "points": [[200, 3]], "metrics": {"alpha": "x"}}]}',
     "t.csv: curves[0]: 'metrics' must map names to numbers"),
    ('{"curves": [{"model": "a", "points": [[200, 3]], "ntk": {"eigenvalues": [1], '
     '"projections": [1, 2], "learning_rate": 0.1}}]}',
     "t.csv: curves[0].ntk: 'eigenvalues' and 'projections' must be non-empty lists of equal "
     "length"),
    ('{"curves": []}', "t: no model curves found"),
]

# Faults whose exact line the command-line matrix pins (test_bad_inputs.py): here only
# that the reader raises an InputError naming where and what.
SEEN_FROM_THE_CLI = [
    ("", ("t.csv", "empty")),
    ("config name,0,200\n", ("t.csv", "no model rows")),
    ("config name,0,200,400\na,3,nan,2\n", ("model 'a', column '200'", "NaN")),
    ("config name,0,200,400\na,3,-1,2\n", ("model 'a', column '200'", "-1 is <= 0")),
    ("config name,0,200,400\na,3,2,1e9\n", ("model 'a', column '400'", "1e9")),
    ("config name,0,200,lots\na,3,2,2\n", ("column 'lots'", "not a data size")),
    ("config name,0,200,2e2\na,3,2,2\n", ("t.csv", "200 appears in two columns")),
    ("model,n,loss,seed\na,200,3,1\n", ("t.csv", "unknown column 'seed'")),
    ("{oops", ("t.csv", "not valid JSON")),
    ('{"curves": 3}', ("t.csv", "'curves' list")),
    ('{"curves": [{"model": "a", "points": [[200, 3]], "extra": 1}]}',
     ("curves[0]", "unknown key(s) extra")),
]


@pytest.mark.parametrize("text, message", BAD_INPUTS)
def test_bad_curve_inputs_give_exact_messages(text, message):
    with pytest.raises(InputError) as info:
        parse_curves(text, source="t.csv")
    assert str(info.value) == message


@pytest.mark.parametrize("text, fragments", SEEN_FROM_THE_CLI)
def test_bad_curve_inputs_name_where_and_what(text, fragments):
    with pytest.raises(InputError) as info:
        parse_curves(text, source="t.csv")
    assert all(f in str(info.value) for f in fragments), str(info.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_curves(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="is a directory"):
        load_curves(tmp_path)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("config name,0,200\nmod\xe8le,3,2\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.csv: not UTF-8 text \(invalid byte at offset 21"):
        load_curves(bad)
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"config name\x00\x01")
    with pytest.raises(InputError, match="binary data"):
        load_curves(binary)


# ------------------------------------------------------- the data model validates itself

NAN, INF = math.nan, math.inf

BAD_CURVES = [
    (dict(sizes=[1, 2], losses=[NAN, -2]),
     "model 'a', size 1: loss is NaN; losses must be finite and > 0"),
    (dict(sizes=[400, 200], losses=[3.0, -2]),
     "model 'a', size 200: loss -2 is <= 0; losses must be finite and > 0"),
    (dict(sizes=[200], losses=[INF]),
     "model 'a', size 200: loss is infinite; losses must be finite and > 0"),
    (dict(sizes=[200], losses=[2e6]),
     "model 'a', size 200: loss 2e+06 is implausibly large (> 1e6)"),
    (dict(sizes=[200], losses=["x"]), "model 'a': losses must be numbers"),
    (dict(sizes=[200], losses=[3.0], zero_shot=NAN),
     "model 'a', zero-shot (size 0): loss is NaN; losses must be finite and > 0"),
    (dict(sizes=[200], losses=[3.0], zero_shot="high"),
     "model 'a', zero-shot (size 0): loss must be a number, got 'high'"),
    (dict(sizes=[200, 200], losses=[3.0, 2.0]), "model 'a' has two losses for size 200"),
    (dict(sizes=[0, 200], losses=[4.0, 3.0]),
     "model 'a': size 0 is the zero-shot point; give its loss as zero_shot"),
    (dict(sizes=[-200], losses=[3.0]),
     "model 'a': -200 is not a data size (a whole number of examples)"),
    (dict(sizes=[200.5], losses=[3.0]),
     "model 'a': 200.5 is not a data size (a whole number of examples)"),
    (dict(sizes=[NAN], losses=[3.0]),
     "model 'a': nan is not a data size (a whole number of examples)"),
    (dict(sizes=[1e16], losses=[3.0]),
     "model 'a': data size 1e+16 is implausibly large (> 1e15 examples)"),
    (dict(sizes=["many"], losses=[3.0]), "model 'a': sizes must be numbers of examples"),
    (dict(sizes=[200, 400], losses=[3.0]), "model 'a': sizes and losses differ in length"),
    (dict(sizes=[200], losses=[3.0], params=0), "model 'a', params: parameter count must be > 0"),
    (dict(sizes=[200], losses=[3.0], params=INF),
     "model 'a', params: parameter count must be > 0"),
    (dict(sizes=[200], losses=[3.0], params="7B"),
     "model 'a', params: parameter count must be a number, got '7B'"),
    (dict(sizes=[200], losses=[3.0], family=3), "model 'a', family: 'family' must be a string"),
    (dict(sizes=[200], losses=[3.0], metrics={"pl_alpha": True}),
     "model 'a', metrics: 'metrics' must map names to numbers"),
    (dict(sizes=[200], losses=[3.0], ntk={"eigenvalues": [1.0]}),
     "model 'a': 'ntk' must be an NTKSpectrum"),
    (dict(model="", sizes=[200], losses=[3.0]),
     "curve: the model name must be a non-empty string, got ''"),
]


@pytest.mark.parametrize("fields, message", BAD_CURVES)
def test_curve_validates_what_the_api_gives(fields, message):
    with pytest.raises(InputError) as info:
        Curve(**{"model": "a", **fields})
    assert str(info.value) == message


def test_a_changed_curve_is_validated_again():
    curve = Curve("a", [200, 400], [3.0, 2.5], zero_shot=4.0)
    with pytest.raises(InputError, match="model 'a', size 400: loss is NaN"):
        replace(curve, losses=np.array([3.0, NAN]))
    part = curve.within(200)  # a part of a valid curve: no second check needed
    assert isinstance(part, Curve) and part.zero_shot == 4.0 and part.sizes.tolist() == [200]
    np.testing.assert_array_equal(curve.sizes, [200, 400])  # the original is untouched


def test_what_a_run_builds_is_accepted():
    """The pipeline's curves: no finished size yet, float params, NaN weight metrics."""
    empty = Curve("m", np.array([], dtype=np.int64), np.array([], dtype=float), zero_shot=3.2,
                  params=1.2e6, metrics={"pl_alpha": NAN})
    assert len(empty) == 0 and empty.zero_shot == 3.2 and math.isnan(empty.metrics["pl_alpha"])
    curves = CurveSet([empty, Curve("n", [16, 32], np.array([3.0, 2.9]))], task="demo")
    assert curves.within(16)["n"].sizes.tolist() == [16]


def test_curve_set_validates_its_members():
    a = Curve("a", [200], [3.0])
    with pytest.raises(InputError, match=r"^t: model 'a' appears twice$"):
        CurveSet([a, a], task="t")
    with pytest.raises(InputError, match=r"^t: item 1 is not a Curve \(dict\)$"):
        CurveSet([a, {"model": "b"}], task="t")
    with pytest.raises(InputError, match=r"^t: no model curves found$"):
        CurveSet([], task="t")


@pytest.mark.parametrize("kwargs, message", [
    (dict(eigenvalues=[1.0], projections=[-1.0], learning_rate=0.1),
     "ntk: projections are squared norms and must be >= 0"),
    (dict(eigenvalues=[NAN], projections=[1.0], learning_rate=0.1),
     "ntk: eigenvalues and projections must be finite numbers"),
    (dict(eigenvalues=[1.0], projections=[1.0], learning_rate=0.0),
     "ntk: 'learning_rate' must be a finite number > 0"),
    (dict(eigenvalues=[1.0], projections=[1.0], learning_rate="fast"),
     "ntk: values must be numbers"),
    (dict(eigenvalues=[1.0], projections=[1.0], learning_rate=0.1, steps=-1),
     "ntk: 'steps' must be a finite number >= 0"),
])
def test_ntk_spectrum_validates_its_values(kwargs, message):
    with pytest.raises(InputError) as info:
        NTKSpectrum(**kwargs)
    assert str(info.value) == message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-5, 10**16), st.floats(allow_nan=True)), max_size=6),
       st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
       st.one_of(st.none(), st.floats(allow_nan=True)))
def test_a_curve_is_valid_or_an_input_error(sizes, losses, zero_shot):
    try:
        curve = Curve("m", sizes, losses, zero_shot=zero_shot)
    except InputError:
        return
    assert np.all(np.diff(curve.sizes) > 0) and np.all(curve.sizes >= 1)
    assert np.all(np.isfinite(curve.losses)) and np.all(curve.losses > 0)


def test_unknown_model_lookup_names_the_known_ones():
    cs = parse_curves(WIDE, source="t.csv")
    with pytest.raises(InputError) as info:
        cs["zzz"]
    assert str(info.value) == "t: no model named 'zzz'; known models: a, b"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_loader_never_raises_anything_but_input_error(text):
    try:
        result = parse_curves(text, source="fuzz.csv")
    except InputError:
        return
    assert isinstance(result, CurveSet)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["config name", "model", "n", "loss", "0", "200",
                                          "1e3", "-1", "nan", "", "x", "3.5", "size",
                                          "family", '"', "1e400"]),
                         min_size=1, max_size=6), min_size=1, max_size=5))
@example(rows=[["n", "loss"], ["config name", "config name"]])  # once a KeyError
def test_structured_fuzz_of_csv_cells(rows):
    text = "\n".join(",".join(r) for r in rows)
    with contextlib.suppress(InputError):
        parse_curves(text, source="fuzz.csv")
