"""The curve file formats: wide CSV, long CSV and JSON, read into a CurveSet.

* **wide CSV** -- the layout of the public benchmark: ``config name`` (or ``model``),
  one column per data size (``0`` is zero-shot), optional ``size`` (parameter count)
  and ``family``.  An empty cell means "not measured".
* **long CSV** -- one row per measurement: ``model, n, loss`` plus optional
  ``params``, ``family`` and ``task`` (a file may hold several tasks).
* **JSON** -- ``{"task": ..., "curves": [{"model", "points": [[n, loss], ...],
  "zero_shot", "params", "family", "ntk": {...}, "metrics": {...}}]}``; the only
  format that carries NTK spectra and weight-spectrum metrics, written by
  ``lensllm run``.

The readers parse text into numbers and leave the checks to the data model
(:mod:`lensllm.core.curves`); they catch a :class:`CurveError` and report it at its line
and column instead.

Large CSV files (from :data:`FAST_MIN_CHARS`) are read vectorised: the row-by-row
readers build and check one Python object per cell, which takes minutes and gigabytes
for hundreds of thousands of rows.  pandas' C parser reads the columns into arrays,
numpy checks every value at once, and the curves are built from slices of those arrays
without checking each value again.  Only plainly valid files take that path: anything
the vectorised reader does not accept -- a quoted field, a row with a different number
of fields, a value that is not a number, a loss out of range, a repeated size, an
ambiguous task -- sends the file to the row-by-row reader, which reports the problem
with its exact line, column and text.  So both paths give the same curves and errors.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lensllm.core.curves import (
    MAX_LOSS,
    MAX_SIZE,
    Curve,
    CurveError,
    CurveSet,
    NTKSpectrum,
)
from lensllm.errors import InputError, read_user_text

WIDE_MODEL_COLUMNS = ("config name", "model")
WIDE_META_COLUMNS = ("size", "family")
LONG_REQUIRED = ("model", "n", "loss")
LONG_OPTIONAL = ("params", "family", "task")


def _parse_size(text: str, where: str) -> int:
    """A data-size header or cell: a non-negative integer (``200``, ``200.0``, ``2e2``)."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a data size (a whole number of examples)")\
            from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise InputError(f"{where}: {text!r} is not a data size (a whole number of examples)")
    if value > MAX_SIZE:
        raise InputError(f"{where}: data size {text!r} is implausibly large (> 1e15 examples)")
    return int(value)


def _parse_number(text: str, where: str, what: str) -> float:
    """A loss or parameter-count cell as a float; whether it is valid is the Curve's call."""
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{where}: {what} {text!r} is not a number") from None


def _parse_params(text: str, model: str, source: str, column: str) -> float | None:
    if text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(
            f"{source}: model {model!r}, column {column!r}: {text!r} is not a parameter count"
        ) from None


#: where each value of a curve came from: point or field -> (file location, cell text)
Where = dict[int | str, tuple[str, str | None]]


def _build_curve(model: str, points: dict[int, float], where: Where, *,
                 params: float | None = None, family: str | None = None,
                 ntk: NTKSpectrum | None = None, metrics: Any = None) -> Curve:
    """The Curve of a file's values; a value the data model rejects is reported at its
    place in the file (``where``), quoting the file's own text."""
    zero = points.pop(0, None)
    sizes = np.fromiter(points.keys(), dtype=np.int64, count=len(points))
    losses = np.fromiter(points.values(), dtype=float, count=len(points))
    try:
        return Curve(model=model, sizes=sizes, losses=losses, zero_shot=zero, params=params,
                     family=None if family == "" else family, ntk=ntk, metrics=metrics)
    except CurveError as exc:
        if exc.point not in where:
            raise
        location, text = where[exc.point]
        raise InputError(f"{location}: {exc.describe(text)}") from None


def _read_rows(text: str, source: str) -> list[list[str]]:
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise InputError(f"{source}: not a readable CSV file ({exc})") from None
    if not rows:
        raise InputError(f"{source}: the file is empty")
    return rows


def _parse_wide(rows: list[list[str]], source: str, task: str) -> CurveSet:
    header = [h.strip() for h in rows[0]]
    lowered = [h.lower() for h in header]
    if lowered[0] not in WIDE_MODEL_COLUMNS:
        raise InputError(
            f"{source}: the first column must be 'config name' or 'model' (found {header[0]!r})"
        )
    size_columns: dict[int, int] = {}
    meta: dict[str, int] = {}
    for j, name in enumerate(header[1:], start=1):
        if lowered[j] in WIDE_META_COLUMNS:
            if lowered[j] in meta:
                raise InputError(f"{source}: column {name!r} appears twice")
            meta[lowered[j]] = j
            continue
        if name == "":
            raise InputError(f"{source}: column {j + 1} has an empty header")
        size = _parse_size(name, f"{source}: column {name!r}")
        if size in size_columns:
            raise InputError(f"{source}: data size {size} appears in two columns")
        size_columns[size] = j
    if not size_columns:
        raise InputError(f"{source}: no data-size columns (expected headers like 0, 200, 400)")
    if len(rows) < 2:
        raise InputError(f"{source}: the file has a header but no model rows")

    curves = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(
                f"{source}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        model = row[0].strip()
        if not model:
            raise InputError(f"{source}: line {line} has an empty model name")
        points: dict[int, float] = {}
        where: Where = {}
        for size, j in size_columns.items():
            cell = row[j].strip()
            if cell == "":
                continue  # not measured
            where[size] = (f"{source}: model {model!r}, column {header[j]!r}", cell)
            points[size] = _parse_number(cell, where[size][0], "loss")
        params = None
        if "size" in meta:
            params = _parse_params(row[meta["size"]], model, source, "size")
            where["params"] = (f"{source}: model {model!r}, column 'size'", None)
        family = row[meta["family"]].strip() if "family" in meta else None
        curves.append(_build_curve(model, points, where, params=params, family=family))
    return CurveSet(curves, task=task)


def _parse_long(rows: list[list[str]], source: str, task: str | None) -> CurveSet:
    header = [h.strip().lower() for h in rows[0]]
    unknown = [h for h in header if h not in LONG_REQUIRED + LONG_OPTIONAL]
    if unknown:
        raise InputError(
            f"{source}: unknown column {unknown[0]!r}; a long-format file has columns "
            f"{', '.join(LONG_REQUIRED)} and optionally {', '.join(LONG_OPTIONAL)}"
        )
    if len(set(header)) != len(header):
        raise InputError(f"{source}: a column name appears twice in the header")
    missing = [h for h in LONG_REQUIRED if h not in header]
    if missing:
        raise InputError(
            f"{source}: no column {missing[0]!r}; a long-format file has columns "
            f"{', '.join(LONG_REQUIRED)} and optionally {', '.join(LONG_OPTIONAL)}"
        )
    col = {h: j for j, h in enumerate(header)}
    if len(rows) < 2:
        raise InputError(f"{source}: the file has a header but no measurement rows")

    if "task" in col:
        tasks = list(dict.fromkeys(r[col["task"]].strip() for r in rows[1:] if len(r) > 0))
        if task is None:
            if len(tasks) > 1:
                raise InputError(
                    f"{source}: the file holds several tasks ({', '.join(tasks)}); "
                    "choose one with task="
                )
            task = tasks[0]
        elif task not in tasks:
            raise InputError(
                f"{source}: no task {task!r} in the file; it holds {', '.join(tasks)}"
            )
    task = task or Path(source).stem

    points: dict[str, dict[int, float]] = {}
    where: dict[str, Where] = {}
    params: dict[str, float | None] = {}
    family: dict[str, str | None] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(
                f"{source}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        if "task" in col and row[col["task"]].strip() != task:
            continue
        model = row[col["model"]].strip()
        if not model:
            raise InputError(f"{source}: line {line} has an empty model name")
        n = _parse_size(row[col["n"]].strip(), f"{source}: line {line}, column 'n'")
        cell = row[col["loss"]].strip()
        location = f"{source}: line {line}: model {model!r}, column 'loss'"
        curve_points = points.setdefault(model, {})
        curve_where = where.setdefault(model, {})
        if n in curve_points:
            raise InputError(f"{source}: model {model!r} has two losses for size {n}")
        curve_points[n] = _parse_number(cell, location, "loss")
        curve_where[n] = (location, cell)
        if "params" in col:
            p = _parse_params(row[col["params"]], model, source, "params")
            first = params.setdefault(model, p)
            if first != p and not (first is not None and p is not None
                                   and math.isnan(first) and math.isnan(p)):
                raise InputError(f"{source}: model {model!r} has two different 'params' values")
            curve_where["params"] = (f"{source}: model {model!r}, column 'params'", None)
        if "family" in col:
            f = row[col["family"]].strip() or None
            if family.setdefault(model, f) != f:
                raise InputError(f"{source}: model {model!r} has two different 'family' values")
    curves = [_build_curve(m, pts, where[m], params=params.get(m), family=family.get(m))
              for m, pts in points.items()]
    return CurveSet(curves, task=task)


def _parse_json(text: str, source: str, task: str | None) -> CurveSet:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("curves"), list):
        raise InputError(f"{source}: expected a JSON object with a 'curves' list")
    name = task or str(data.get("task") or Path(source).stem)
    curves = []
    for i, entry in enumerate(data["curves"]):
        where = f"{source}: curves[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object")
        unknown = set(entry) - {"model", "points", "zero_shot", "params", "family", "ntk",
                                "metrics"}
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        model = entry.get("model")
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"{where}: 'model' must be a non-empty string")
        model = model.strip()
        pts: dict[int, float] = {}
        here: Where = {"family": (where, None), "metrics": (where, None)}
        raw_points = entry.get("points", [])
        if not isinstance(raw_points, list):
            raise InputError(f"{where}: 'points' must be a list of [n, loss] pairs")
        for point in raw_points:
            if not (isinstance(point, list | tuple) and len(point) == 2):
                raise InputError(f"{where}: 'points' must be a list of [n, loss] pairs")
            n = _parse_size(str(point[0]), f"{where}, point {point!r}")
            if n in pts:
                raise InputError(f"{source}: model {model!r} has two losses for size {n}")
            here[n] = (f"{source}: model {model!r}, column {str(n)!r}", str(point[1]).strip())
            pts[n] = _parse_number(str(point[1]), here[n][0], "loss")
        if entry.get("zero_shot") is not None:
            if 0 in pts:
                raise InputError(f"{source}: model {model!r} has two zero-shot losses")
            here[0] = (f"{source}: model {model!r}, column 'zero_shot'",
                       str(entry["zero_shot"]).strip())
            pts[0] = _parse_number(here[0][1], here[0][0], "loss")
        params = None
        if entry.get("params") is not None:
            params = _parse_params(str(entry["params"]), model, source, "params")
            here["params"] = (f"{source}: model {model!r}, column 'params'", None)
        ntk = None
        if entry.get("ntk") is not None:
            ntk = NTKSpectrum.from_dict(entry["ntk"], where=f"{where}.ntk")
        metrics = entry.get("metrics")
        curves.append(_build_curve(model, pts, here, params=params, family=entry.get("family"),
                                   ntk=ntk, metrics=None if metrics == {} else metrics))
    return CurveSet(curves, task=name)


def parse_curves(text: str, source: str = "curves", fmt: str = "auto",
                 task: str | None = None) -> CurveSet:
    """Parse curve data held in a string; ``fmt`` is ``auto``, ``wide``, ``long`` or ``json``."""
    if fmt not in ("auto", "wide", "long", "json"):
        raise InputError(f"unknown curve format {fmt!r}; use auto, wide, long or json")
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise InputError(f"{source}: the file is empty")
    if fmt == "json" or (fmt == "auto" and text.lstrip()[:1] in "{["):
        return _parse_json(text, source, task)
    if len(text) >= FAST_MIN_CHARS:
        first = {h.strip().lower() for h in next(csv.reader(io.StringIO(
            text.split("\n", 1)[0])), [])}
        long = fmt == "long" or (fmt == "auto" and {"n", "loss"} <= first)
        fast = (read_long(text, source, task) if long
                else read_wide(text, source, task or Path(source).stem))
        if fast is not None:
            return fast
    rows = _read_rows(text, source)
    header = {h.strip().lower() for h in rows[0]}
    if fmt == "long" or (fmt == "auto" and {"n", "loss"} <= header):
        return _parse_long(rows, source, task)
    return _parse_wide(rows, source, task or Path(source).stem)


def load_curves(path: str | Path, fmt: str = "auto", task: str | None = None) -> CurveSet:
    """Load a curve file (wide CSV, long CSV or JSON; detected from its content)."""
    path = Path(path)
    source = path.name
    text = read_user_text(path, "file", "a curve file")
    if "\x00" in text:
        raise InputError(f"{source}: binary data, expected a CSV or JSON curve file")
    return parse_curves(text, source=source, fmt=fmt, task=task or None)


# ------------------------------------------------------------- vectorised reading

#: files smaller than this are read row by row (pandas' import would cost more)
FAST_MIN_CHARS = 256 * 1024


def _trusted(model: str, sizes: np.ndarray, losses: np.ndarray, zero: float | None,
             params: float | None, family: str | None) -> Curve:
    """A Curve from values the caller has already checked as Curve would (vectorised);
    sizes sorted, each once."""
    curve = _new(Curve)
    _set(curve, "__dict__", {"model": model, "sizes": sizes, "losses": losses,
                             "zero_shot": zero, "params": params, "family": family,
                             "ntk": None, "metrics": None})
    return curve


_new, _set = object.__new__, object.__setattr__


def _regular(text: str, fields: int) -> bool:
    """Every line (but a final empty one) has ``fields`` comma-separated fields, and no
    field is quoted: then the columns pandas reads are the columns the file has."""
    if '"' in text:
        return False
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    if data.size and data[-1] != ord("\n"):
        ends = np.append(ends, data.size)
    commas = np.flatnonzero(data == ord(","))
    per_line = np.diff(np.searchsorted(commas, ends), prepend=0)
    return bool(per_line.size) and bool((per_line == fields - 1).all())


def _losses_ok(values: np.ndarray) -> bool:
    finite = values[~np.isnan(values)]
    return bool(((finite > 0) & (finite <= MAX_LOSS)).all())


def _strings(column: Any) -> Any:
    """A text column, stripped, with empty cells as "" (a pandas Series: its string
    operations run in C, not one Python call per cell)."""
    return column.fillna("").astype(str).str.strip()


def _read(text: str, names: int, dtypes: dict[int, Any]):
    import pandas as pd

    try:
        return pd.read_csv(io.StringIO(text), header=None, skiprows=1, names=range(names),
                           dtype=dtypes, keep_default_na=False, na_values=[""],
                           skip_blank_lines=False, engine="c")
    except (ValueError, pd.errors.ParserError):
        return None


def _floats(frame, column: int) -> np.ndarray | None:
    series = frame[column]
    if series.dtype.kind not in "fi":
        return None  # a cell that is not a number: the row-by-row reader names it
    return series.to_numpy(dtype=float)


def read_wide(text: str, source: str, task: str) -> CurveSet | None:
    header = [h.strip() for h in next(csv.reader(io.StringIO(text.split("\n", 1)[0])))]
    lowered = [h.lower() for h in header]
    if not header or lowered[0] not in WIDE_MODEL_COLUMNS or not _regular(text, len(header)):
        return None
    sizes: dict[int, int] = {}
    meta: dict[str, int] = {}
    for j, name in enumerate(header[1:], start=1):
        if lowered[j] in WIDE_META_COLUMNS:
            if lowered[j] in meta:
                return None
            meta[lowered[j]] = j
            continue
        try:
            size = _parse_size(name, source)
        except InputError:
            return None
        if size in sizes:
            return None
        sizes[size] = j
    if not sizes:
        return None
    text_columns = [0, *(meta[k] for k in ("family",) if k in meta)]
    frame = _read(text, len(header), {j: str for j in text_columns})
    if frame is None or len(frame) == 0:
        return None
    models = _strings(frame[0])
    if (models == "").any():
        return None
    models = models.tolist()
    order = sorted(sizes)
    table = np.empty((len(frame), len(order)))
    for k, n in enumerate(order):
        values = _floats(frame, sizes[n])
        if values is None:
            return None
        table[:, k] = values
    if not _losses_ok(table):
        return None
    params = None
    if "size" in meta:
        params = _floats(frame, meta["size"])
        if params is None or not (np.isnan(params) | ((params > 0) & np.isfinite(params))).all():
            return None
    family = _strings(frame[meta["family"]]).tolist() if "family" in meta else None
    zero = None
    if order[0] == 0:
        zero, table, order = table[:, 0], table[:, 1:], order[1:]
    size_array = np.array(order, dtype=np.int64)
    measured = ~np.isnan(table)
    full = measured.all(axis=1)
    curves = []
    zero_list = None if zero is None else zero.tolist()
    params_list = None if params is None else params.tolist()
    for i, model in enumerate(models):
        if full[i]:
            row_sizes, row_losses = size_array, table[i]
        else:
            row_sizes, row_losses = size_array[measured[i]], table[i, measured[i]]
        curves.append(_trusted(
            model, row_sizes, row_losses,
            None if zero_list is None or math.isnan(zero_list[i]) else zero_list[i],
            None if params_list is None or math.isnan(params_list[i]) else params_list[i],
            None if family is None or family[i] == "" else family[i]))
    return CurveSet(curves, task=task)


def read_long(text: str, source: str, task: str | None) -> CurveSet | None:
    import pandas as pd

    header = [h.strip().lower() for h in next(csv.reader(io.StringIO(text.split("\n", 1)[0])))]
    if (any(h not in LONG_REQUIRED + LONG_OPTIONAL for h in header)
            or len(set(header)) != len(header) or not set(LONG_REQUIRED) <= set(header)
            or not _regular(text, len(header))):
        return None
    col = {h: j for j, h in enumerate(header)}
    frame = _read(text, len(header), {col[k]: str for k in ("model", "family", "task")
                                      if k in col})
    if frame is None or len(frame) == 0:
        return None
    if "task" in col:
        tasks = _strings(frame[col["task"]])
        names = list(pd.unique(tasks))
        if (task is None and len(names) > 1) or (task is not None and task not in names):
            return None  # the row-by-row reader says which tasks the file holds
        task = task or names[0]
        frame = frame[(tasks == task).to_numpy()]
    task = task or Path(source).stem
    models = _strings(frame[col["model"]])
    sizes, losses = _floats(frame, col["n"]), _floats(frame, col["loss"])
    if sizes is None or losses is None or (models == "").any():
        return None
    if not (np.isfinite(sizes).all() and (sizes >= 0).all() and (sizes <= MAX_SIZE).all()
            and (sizes == np.round(sizes)).all()) or np.isnan(losses).any() \
            or not _losses_ok(losses):
        return None
    codes, names = pd.factorize(models, sort=False)  # first-appearance order
    n = sizes.astype(np.int64)
    order = np.lexsort((n, codes))
    codes, n, losses = codes[order], n[order], losses[order]
    if ((codes[1:] == codes[:-1]) & (n[1:] == n[:-1])).any():
        return None  # a size measured twice
    starts = np.flatnonzero(np.diff(codes, prepend=-1))
    extras = {}
    for key in ("params", "family"):
        if key not in col:
            continue
        if key == "params":
            values = _floats(frame, col[key])
            if values is None:
                return None
        else:  # compare integer codes of the texts, not the texts
            values, texts = pd.factorize(_strings(frame[col[key]]), sort=False)
        values = values[order]
        first = np.repeat(values[starts], np.diff(np.append(starts, len(values))))
        if key == "params":
            same = (values == first) | (np.isnan(values) & np.isnan(first))
            valid = np.isnan(values) | ((values > 0) & np.isfinite(values))
            if not (same.all() and valid.all()):
                return None
            extras[key] = values[starts].tolist()
        else:
            if not (values == first).all():
                return None
            names_of = texts.tolist()
            extras[key] = [names_of[c] for c in values[starts].tolist()]
    curves = []
    bounds = np.append(starts, len(n)).tolist()
    zero_at = (n == 0).tolist()
    loss_list = losses.tolist()
    for k, model in enumerate(names.tolist()):
        lo, hi = bounds[k], bounds[k + 1]
        zero = None
        if lo < hi and zero_at[lo]:
            zero, lo = loss_list[lo], lo + 1
        params = extras["params"][k] if "params" in extras else math.nan
        family = extras["family"][k] if "family" in extras else ""
        curves.append(_trusted(model, n[lo:hi], losses[lo:hi], zero,
                               None if math.isnan(params) else params, family or None))
    return CurveSet(curves, task=task)
