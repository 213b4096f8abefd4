"""Curve data model, the three file formats, and validation messages."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lensllm.core.curves import CurveSet, NTKSpectrum, load_curves, parse_curves
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


BAD_INPUTS = [
    ("", "t.csv: the file is empty"),
    ("config name,0,200\n", "t.csv: the file has a header but no model rows"),
    ("config name,0,200,400\na,3,nan,2\n",
     "t.csv: model 'a', column '200': loss is NaN; losses must be finite and > 0"),
    ("config name,0,200,400\na,3,inf,2\n",
     "t.csv: model 'a', column '200': loss is infinite; losses must be finite and > 0"),
    ("config name,0,200,400\na,3,-1,2\n",
     "t.csv: model 'a', column '200': loss -1 is <= 0; losses must be finite and > 0"),
    ("config name,0,200,400\na,3,0,2\n",
     "t.csv: model 'a', column '200': loss 0 is <= 0; losses must be finite and > 0"),
    ("config name,0,200,400\na,3,abc,2\n",
     "t.csv: model 'a', column '200': loss 'abc' is not a number"),
    ("config name,0,200,200\na,3,2,2\n", "t.csv: data size 200 appears in two columns"),
    ("config name,0,200,2e2\na,3,2,2\n", "t.csv: data size 200 appears in two columns"),
    ("config name,0,200,lots\na,3,2,2\n",
     "t.csv: column 'lots': 'lots' is not a data size (a whole number of examples)"),
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
    ("config name,size,family\na,3,x\n",
     "t.csv: no data-size columns (expected headers like 0, 200, 400)"),
    ("model,n,loss\na,200,3\na,200,2\n", "t.csv: model 'a' has two losses for size 200"),
    ("n,loss\n200,3\n",
     "t.csv: no column 'model'; a long-format file has columns model, n, loss and "
     "optionally params, family, task"),
    ("model,n,loss,seed\na,200,3,1\n",
     "t.csv: unknown column 'seed'; a long-format file has columns model, n, loss and "
     "optionally params, family, task"),
    ("model,n,loss\na,x,3\n",
     "t.csv: line 2, column 'n': 'x' is not a data size (a whole number of examples)"),
    ("model,n,loss,params\na,200,3,10\na,400,2,20\n",
     "t.csv: model 'a' has two different 'params' values"),
    ('{"curves": 3}', "t.csv: expected a JSON object with a 'curves' list"),
    ("{oops", "t.csv: not valid JSON (Expecting property name enclosed in double quotes, "
     "line 1)"),
    ('{"curves": [{"model": "a", "points": [[200, 3]], "extra": 1}]}',
     "t.csv: curves[0]: unknown key(s) extra"),
    ('{"curves": [{"model": "a", "points": [[200, 3, 4]]}]}',
     "t.csv: curves[0]: 'points' must be a list of [n, loss] pairs"),
    ('{"curves": [{"model": "a", "points": [[200, 3]], "ntk": {"eigenvalues": [1], '
     '"projections": [1, 2], "learning_rate": 0.1}}]}',
     "t.csv: curves[0].ntk: 'eigenvalues' and 'projections' must be non-empty lists of equal "
     "length"),
    ('{"curves": []}', "t: no model curves found"),
    ("config name,0,200,400\na,3,2,1e9\n",
     "t.csv: model 'a', column '400': loss 1e9 is implausibly large (> 1e6)"),
]


@pytest.mark.parametrize("text, message", BAD_INPUTS)
def test_bad_curve_inputs_give_exact_messages(text, message):
    with pytest.raises(InputError) as info:
        parse_curves(text, source="t.csv")
    assert str(info.value) == message


def test_file_level_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_curves(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="is a directory"):
        load_curves(tmp_path)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("config name,0,200\nmod\xe8le,3,2\n".encode("latin-1"))
    with pytest.raises(InputError) as info:
        load_curves(bad)
    assert str(info.value) == ("latin1.csv: not UTF-8 text (invalid byte at offset 21); "
                               "save it as UTF-8")
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"config name\x00\x01")
    with pytest.raises(InputError, match="binary data"):
        load_curves(binary)


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
