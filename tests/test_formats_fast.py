"""The vectorised CSV reader (large files) gives the same curves as the row-by-row
reader, and hands every irregular file back to it, so errors keep their exact text."""

from __future__ import annotations

import numpy as np
import pytest

from lensllm.core import formats
from lensllm.core.formats import load_curves, parse_curves
from lensllm.errors import InputError

WIDE = """config name,0,200,400,800,size,family
gpt2, 4.8,4.3,4.2,,124439808,GPT2
t5-small,3.9,3.0,2.9,2.8,,T5
bart,8.5,,4.1,4.0,96103680,
"""
LONG = """task,model,n,loss,params,family
flan,gpt2,0,4.8,124439808,GPT2
flan,gpt2,400,4.2,124439808,GPT2
flan,gpt2,200,4.3,124439808,GPT2
wmt,gpt2,200,3.3,124439808,GPT2
flan,t5-small,200,3.0,,T5
flan,t5-small,400,2.9,,T5
"""


def _same(a, b) -> None:
    assert a.task == b.task and a.models == b.models
    for x, y in zip(a, b, strict=True):
        assert (x.model, x.zero_shot, x.params, x.family) == (y.model, y.zero_shot, y.params,
                                                              y.family)
        assert x.sizes.dtype == y.sizes.dtype == np.int64
        np.testing.assert_array_equal(x.sizes, y.sizes)
        np.testing.assert_array_equal(x.losses, y.losses)


def test_wide_fast_equals_row_by_row():
    fast = formats.read_wide(WIDE, "w.csv", "w")
    assert fast is not None
    _same(fast, formats._parse_wide(formats._read_rows(WIDE, "w.csv"), "w.csv", "w"))


@pytest.mark.parametrize("task", [None, "wmt"])
def test_long_fast_equals_row_by_row(task):
    text = LONG if task else LONG.replace("wmt,", "flan,").replace("flan,gpt2,200,3.3",
                                                                     "flan,gpt2,800,3.3")
    fast = formats.read_long(text, "l.csv", task)
    assert fast is not None
    _same(fast, formats._parse_long(formats._read_rows(text, "l.csv"), "l.csv", task))


@pytest.mark.parametrize("text", [
    WIDE.replace("t5-small", '"t5,small"'),            # a quoted field
    WIDE.replace("2.9,2.8,,T5", "2.9,2.8,T5"),         # a row one field short
    WIDE.replace("4.1", "nan"),                        # a loss that is not a number here
    WIDE.replace("4.1", "-4.1"),                       # a loss <= 0
    WIDE.replace("gpt2, 4.8", " , 4.8"),               # an empty model name
    WIDE.replace("400,800", "400,400"),                # a size in two columns
    WIDE.replace("124439808", "-5"),                   # a parameter count <= 0
    WIDE + "\n",                                       # a blank line
])
def test_irregular_wide_files_go_row_by_row(text):
    assert formats.read_wide(text, "w.csv", "w") is None


@pytest.mark.parametrize("text", [
    LONG,                                              # two tasks and none chosen
    LONG.replace("flan,gpt2,400", "flan,gpt2,200"),    # a size measured twice
    LONG.replace(",,T5\nflan,t5-small,400,2.9,,T5", ",,T5\nflan,t5-small,400,2.9,7,T5"),
    LONG.replace("4.2", ""),                           # an empty loss
])
def test_irregular_long_files_go_row_by_row(text):
    assert formats.read_long(text, "l.csv", None) is None


def test_large_files_take_the_fast_path_and_keep_exact_errors(tmp_path, monkeypatch):
    rows = [f"m{i:05d},{4 + i % 7 / 10},{3 + i % 5 / 10},{2.5 + i % 3 / 10}" for i in
            range(30_000)]
    path = tmp_path / "big.csv"
    path.write_text("model,0,100,200\n" + "\n".join(rows) + "\n")
    assert path.stat().st_size > formats.FAST_MIN_CHARS
    calls = []
    read_wide = formats.read_wide
    monkeypatch.setattr(formats, "read_wide",
                        lambda *a: calls.append(1) or read_wide(*a))
    curves = load_curves(path)
    assert calls and len(curves) == 30_000 and curves["m00012"].loss_at(200) == 2.5
    rows[20_000] = rows[20_000].replace(",2.", ",x")
    path.write_text("model,0,100,200\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError) as info:
        load_curves(path)
    assert str(info.value) == ("big.csv: model 'm20000', column '200': loss 'x7' is not a "
                               "number")


def test_small_files_never_import_pandas_for_reading(monkeypatch):
    monkeypatch.setattr(formats, "read_wide", lambda *a: pytest.fail("fast path used"))
    assert len(parse_curves(WIDE, "w.csv")) == 3
