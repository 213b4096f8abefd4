"""Loss curves: the validated data model.

A :class:`Curve` is what lensllm knows about one candidate model on one task: test
losses after fine-tuning on nested subsets of increasing size, the zero-shot loss
(size 0), optionally its parameter count and family, and optionally the NTK
measurements that give the LensLLM law its F(Θ, t) term.  A :class:`CurveSet` is the
set of candidates compared on one task.

The file formats (wide CSV, long CSV, JSON) are read by :mod:`lensllm.core.formats`
(:func:`~lensllm.core.formats.load_curves`).

Validation lives in the data model (:class:`Curve`, :class:`NTKSpectrum`,
:class:`CurveSet`), so a curve built from a file, by the API or by a run is checked
the same way.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lensllm.errors import InputError


@dataclass(frozen=True)
class NTKSpectrum:
    """Empirical-NTK measurements of one pretrained model on a task's probe set.

    With K = U diag(λ) Uᵀ the probe-set kernel and r₀ the initial residual, the
    linearised residual after ``t`` steps of rate ``η`` has squared norm
    ``F(t) = Σ_i exp(-2 η λ_i t) a_i`` with ``a_i = (u_i · r₀)²``.
    """

    eigenvalues: np.ndarray
    projections: np.ndarray
    learning_rate: float
    steps: float | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        try:
            lam = np.asarray(self.eigenvalues, dtype=float).ravel()
            a = np.asarray(self.projections, dtype=float).ravel()
            rate = float(self.learning_rate)
            steps = None if self.steps is None else float(self.steps)
        except (TypeError, ValueError):
            raise InputError("ntk: values must be numbers") from None
        if lam.size == 0 or lam.shape != a.shape:
            raise InputError(
                "ntk: 'eigenvalues' and 'projections' must be non-empty lists of equal length"
            )
        if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(a))):
            raise InputError("ntk: eigenvalues and projections must be finite numbers")
        if np.any(a < 0):
            raise InputError("ntk: projections are squared norms and must be >= 0")
        if not (math.isfinite(rate) and rate > 0):
            raise InputError("ntk: 'learning_rate' must be a finite number > 0")
        if steps is not None and not (math.isfinite(steps) and steps >= 0):
            raise InputError("ntk: 'steps' must be a finite number >= 0")
        # Tiny negative eigenvalues are round-off of a PSD kernel.
        object.__setattr__(self, "eigenvalues", np.clip(lam, 0.0, None))
        object.__setattr__(self, "projections", a)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "eigenvalues": self.eigenvalues.tolist(),
            "projections": self.projections.tolist(),
            "learning_rate": self.learning_rate,
            "steps": self.steps,
        }
        if self.info:
            out["info"] = self.info
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "ntk") -> NTKSpectrum:
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected an object with eigenvalues and projections")
        unknown = set(data) - {"eigenvalues", "projections", "learning_rate", "steps", "info"}
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            values = {
                "eigenvalues": np.asarray(data["eigenvalues"], dtype=float),
                "projections": np.asarray(data["projections"], dtype=float),
                "learning_rate": float(data["learning_rate"]),
                "steps": None if data.get("steps") is None else float(data["steps"]),
            }
        except KeyError as exc:
            raise InputError(f"{where}: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise InputError(f"{where}: values must be numbers") from None
        info = data.get("info") or {}
        if not isinstance(info, dict):
            raise InputError(f"{where}: 'info' must be an object")
        try:
            return cls(**values, info=dict(info))
        except InputError as exc:
            raise InputError(str(exc).replace("ntk:", f"{where}:", 1)) from None


#: limits shared by the data model and the file readers
MAX_LOSS = 1e6
MAX_SIZE = 1e15


class CurveError(InputError):
    """An invalid value in a curve: the model, the point or field, and what is wrong.

    ``point`` is a data size (0 = the zero-shot loss) or a field name (``"params"``,
    ``"family"``, ``"metrics"``).  ``problem`` may hold ``{value}``, the offending value:
    the file readers catch the error and put the file, line and column in front of
    :meth:`describe` given the cell's own text, so a file's message quotes the file.
    """

    def __init__(self, model: str, point: int | str, problem: str, value: str = "") -> None:
        self.model = model
        self.point = point
        self.problem = problem
        self.value = value
        if isinstance(point, str):
            label = point
        else:
            label = "zero-shot (size 0)" if point == 0 else f"size {point}"
        super().__init__(f"model {model!r}, {label}: {self.describe()}")

    def describe(self, value: str | None = None) -> str:
        """What is wrong, quoting ``value`` (default: the value as the model holds it)."""
        return self.problem.format(value=self.value if value is None else value)


def _check_loss(model: str, point: int, value: float) -> None:
    if math.isnan(value):
        raise CurveError(model, point, "loss is NaN; losses must be finite and > 0")
    if math.isinf(value):
        raise CurveError(model, point, "loss is infinite; losses must be finite and > 0")
    if value <= 0:
        raise CurveError(model, point, "loss {value} is <= 0; losses must be finite and > 0",
                         f"{value:g}")
    if value > MAX_LOSS:
        raise CurveError(model, point, "loss {value} is implausibly large (> 1e6)",
                         f"{value:g}")


def _number(model: str, point: int | str, value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise CurveError(model, point, f"{what} must be a number, got {{value}}", repr(value))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CurveError(model, point, f"{what} must be a number, got {{value}}",
                         repr(value)) from None


def _as_sizes(model: str, sizes: Any) -> np.ndarray:
    """Data sizes as int64: whole numbers from 1 to 1e15 (size 0 is the zero-shot loss)."""
    values = np.asarray(sizes).ravel()
    if values.dtype.kind not in "iu":
        try:
            values = values.astype(float)
        except (TypeError, ValueError):
            raise InputError(f"model {model!r}: sizes must be numbers of examples") from None
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            raise InputError(f"model {model!r}: {values[bad][0]:g} is not a data size (a "
                             "whole number of examples)")
    if values.size and values.min() < 1:
        if values.min() < 0:
            raise InputError(f"model {model!r}: {values.min():g} is not a data size (a whole "
                             "number of examples)")
        raise InputError(f"model {model!r}: size 0 is the zero-shot point; give its loss as "
                         "zero_shot")
    if values.size and values.max() > MAX_SIZE:
        raise InputError(f"model {model!r}: data size {values.max():g} is implausibly large "
                         "(> 1e15 examples)")
    return values.astype(np.int64, copy=False)


@dataclass(frozen=True)
class Curve:
    """Test loss of one candidate model on one task versus fine-tuning data size.

    Validated on construction, whatever builds it (a file reader, the API, a run):
    ``model`` a non-empty name; ``sizes`` whole numbers >= 1, each once (stored sorted,
    with their losses); losses and ``zero_shot`` finite, > 0 and at most 1e6;
    ``params`` > 0; ``family`` a string; ``metrics`` a mapping of names to numbers.
    An :class:`InputError` (a :class:`CurveError` for a bad value) names the model,
    the point and what is wrong.
    """

    model: str
    sizes: np.ndarray
    losses: np.ndarray
    zero_shot: float | None = None
    params: float | None = None
    family: str | None = None
    ntk: NTKSpectrum | None = None
    #: weight-spectrum metrics of the pretrained model (e.g. ``pl_alpha``), if measured
    metrics: dict[str, float] | None = None

    def __post_init__(self) -> None:
        model = self.model
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"curve: the model name must be a non-empty string, got {model!r}")
        sizes = _as_sizes(model, self.sizes)
        try:
            losses = np.asarray(self.losses, dtype=float).ravel()
        except (TypeError, ValueError):
            raise InputError(f"model {model!r}: losses must be numbers") from None
        if sizes.shape != losses.shape:
            raise InputError(f"model {model!r}: sizes and losses differ in length")
        if self.zero_shot is not None:
            _check_loss(model, 0, _number(model, 0, self.zero_shot, "loss"))
        order = np.argsort(sizes, kind="stable")
        sizes, losses = sizes[order], losses[order]
        twice = sizes[1:] == sizes[:-1]
        if twice.any():
            raise InputError(f"model {model!r} has two losses for size {sizes[1:][twice][0]}")
        if not np.all((losses > 0) & (losses <= MAX_LOSS)):  # NaN fails both
            for n, value in zip(sizes.tolist(), losses.tolist(), strict=True):
                _check_loss(model, n, value)
        if self.params is not None:
            params = _number(model, "params", self.params, "parameter count")
            if not (math.isfinite(params) and params > 0):
                raise CurveError(model, "params", "parameter count must be > 0")
        if self.family is not None and not isinstance(self.family, str):
            raise CurveError(model, "family", "'family' must be a string")
        if self.ntk is not None and not isinstance(self.ntk, NTKSpectrum):
            raise InputError(f"model {model!r}: 'ntk' must be an NTKSpectrum")
        if self.metrics is not None:
            if not isinstance(self.metrics, dict) or not all(
                    isinstance(k, str) and isinstance(v, int | float | np.number)
                    and not isinstance(v, bool) for k, v in self.metrics.items()):
                raise CurveError(model, "metrics", "'metrics' must map names to numbers")
            object.__setattr__(self, "metrics", {k: float(v) for k, v in self.metrics.items()})
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "losses", losses)

    def __len__(self) -> int:
        return int(self.sizes.size)

    def within(self, budget: float) -> Curve:
        """The same curve restricted to the sizes ``<= budget`` (zero-shot kept)."""
        keep = self.sizes <= budget
        # A part of a valid curve is valid: no checks again (the protocol's hot path).
        part = object.__new__(type(self))
        part.__dict__.update(self.__dict__, sizes=self.sizes[keep], losses=self.losses[keep])
        return part

    def loss_at(self, n: int) -> float | None:
        """Measured loss at exactly ``n`` examples (0 = zero-shot), or None."""
        if n == 0:
            return self.zero_shot
        hit = np.flatnonzero(self.sizes == n)
        return float(self.losses[hit[0]]) if hit.size else None


class CurveSet(Sequence[Curve]):
    """The candidates compared on one task: an ordered, name-indexed set of curves."""

    def __init__(self, curves: Iterable[Curve], task: str = "curves") -> None:
        self._curves = tuple(curves)
        self.task = task
        for i, curve in enumerate(self._curves):
            if not isinstance(curve, Curve):
                raise InputError(f"{task}: item {i} is not a Curve ({type(curve).__name__})")
        if not self._curves:
            raise InputError(f"{task}: no model curves found")
        self._index: dict[str, int] = {}
        for i, curve in enumerate(self._curves):
            if curve.model in self._index:
                raise InputError(f"{task}: model {curve.model!r} appears twice")
            self._index[curve.model] = i

    def __len__(self) -> int:
        return len(self._curves)

    def __iter__(self) -> Iterator[Curve]:
        return iter(self._curves)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            try:
                return self._curves[self._index[key]]
            except KeyError:
                raise InputError(
                    f"{self.task}: no model named {key!r}; known models: "
                    + ", ".join(self.models)
                ) from None
        return self._curves[key]

    def __repr__(self) -> str:
        return f"CurveSet(task={self.task!r}, models={len(self)})"

    @property
    def models(self) -> list[str]:
        return [c.model for c in self._curves]

    def within(self, budget: float) -> CurveSet:
        return CurveSet((c.within(budget) for c in self._curves), task=self.task)

    def subset(self, models: Iterable[str]) -> CurveSet:
        return CurveSet((self[m] for m in models), task=self.task)

    def losses_at(self, n: int, purpose: str) -> np.ndarray:
        """Loss of every model at exactly ``n``; a clear error names a model without it."""
        out = np.empty(len(self))
        for i, curve in enumerate(self._curves):
            value = curve.loss_at(n)
            if value is None:
                what = "zero-shot loss (size 0)" if n == 0 else f"measured loss at size {n}"
                raise InputError(
                    f"{self.task}: model {curve.model!r} has no {what}; {purpose}"
                )
            out[i] = value
        return out

    def to_records(self) -> list[dict[str, Any]]:
        """Long-format rows (model, n, loss, params, family); zero-shot is n = 0."""
        rows = []
        for c in self._curves:
            points = [(0, c.zero_shot)] if c.zero_shot is not None else []
            points += list(zip(c.sizes.tolist(), c.losses.tolist(), strict=True))
            for n, loss in points:
                rows.append(
                    {"model": c.model, "n": int(n), "loss": float(loss),
                     "params": c.params, "family": c.family}
                )
        return rows

    def to_frame(self):
        """Long-format pandas DataFrame of every measurement."""
        import pandas as pd

        return pd.DataFrame.from_records(
            self.to_records(), columns=["model", "n", "loss", "params", "family"]
        )

    def to_wide_csv(self) -> str:
        """The wide CSV layout of the public benchmark (``config name``, sizes, size, family)."""
        sizes = sorted({int(n) for c in self._curves for n in c.sizes})
        has_zero = any(c.zero_shot is not None for c in self._curves)
        header = ["config name"] + (["0"] if has_zero else []) + [str(n) for n in sizes]
        header += ["size", "family"]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for c in self._curves:
            row: list[Any] = [c.model]
            if has_zero:
                row.append("" if c.zero_shot is None else repr(float(c.zero_shot)))
            for n in sizes:
                value = c.loss_at(n)
                row.append("" if value is None else repr(value))
            row.append("" if c.params is None else int(c.params))
            row.append(c.family or "")
            writer.writerow(row)
        return buf.getvalue()

    def to_json(self) -> dict[str, Any]:
        curves = []
        for c in self._curves:
            entry: dict[str, Any] = {
                "model": c.model,
                "points": [[int(n), float(v)] for n, v in zip(c.sizes, c.losses, strict=True)],
                "zero_shot": c.zero_shot,
                "params": c.params,
                "family": c.family,
            }
            if c.ntk is not None:
                entry["ntk"] = c.ntk.to_dict()
            if c.metrics:
                entry["metrics"] = dict(c.metrics)
            curves.append(entry)
        return {"task": self.task, "curves": curves}
