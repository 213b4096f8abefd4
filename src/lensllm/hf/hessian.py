"""Hessian measurements of a model's probe loss, per layer, on a CPU budget.

The paper's theory rests on a Hessian-based PAC-Bayes bound (in the line of Ju et al.,
2022) whose complexity term is built from layer-wise Hessian-weighted distances from
the pretrained weights, ``(θ_l - θ0_l)ᵀ H_l (θ_l - θ0_l)``, and attributes the
pre-power -> power transition to the Hessian shrinking.  This module measures both
quantities; nothing here forms a Hessian matrix.

* **Trace per layer** by Hutchinson's estimator: for Rademacher vectors ``z`` over all
  measured parameters, ``E[z_lᵀ (H z)_l] = tr(H_ll)`` (the cross-layer terms have mean
  zero), so one Hessian-vector product per sample gives every layer's estimate at
  once.  The probe vectors are drawn from a seeded generator: the same seed, probe set
  and thread count give the same numbers.
* **Hessian-weighted distance per layer**: ``δ_lᵀ H_ll δ_l`` with ``δ = θ - θ0``
  restricted to layer ``l`` (one product per layer), and the whole quadratic form
  ``δᵀ H δ`` (one more).

The loss is the probe loss of the NTK measurement: the mean over probe examples of each
example's mean target-token NLL.  Hessian-vector products use double backward
(``torch.autograd.grad`` with ``create_graph=True`` on the gradient, then the gradient of
``gᵀv``).  Memory stays near one training step: examples are processed in chunks whose
graph is freed before the next, and every product is reduced to per-layer scalars at
once, so no Hessian-sized or sample-sized vector is ever kept besides the probe vector
being used.  Layers are the transformer blocks (found as the NTK's ``last`` selection
finds them) plus ``other`` (embeddings, final norm, an untied head).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from lensllm.errors import InputError
from lensllm.hf.ntk._memory import PeakMemory
from lensllm.hf.ntk.examples import target_loss
from lensllm.hf.ntk.params import find_block_list

LossFn = Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]
#: the group of the parameters outside the transformer blocks
OTHER_LAYER = "other"
PARAM_SETS = ("trainable", "all")


@dataclass
class HessianMeasurement:
    """Per-layer Hessian trace estimates (and, given reference weights, distances).

    ``trace[l]`` is the mean of ``samples`` Hutchinson estimates of ``tr(H_ll)`` and
    ``trace_stderr[l]`` its standard error; ``distance[l]`` is ``δ_lᵀ H_ll δ_l`` and
    ``distance_total`` is ``δᵀ H δ`` (None without reference weights).
    """

    layers: list[str]
    n_params: dict[str, int]
    trace: dict[str, float]
    trace_stderr: dict[str, float]
    samples: int
    probe_size: int
    seed: int
    loss: float
    seconds: float
    peak_rss_bytes: int
    distance: dict[str, float] | None = None
    distance_total: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_trace(self) -> float:
        """Sum of the per-layer traces: the trace of the whole measured Hessian."""
        return float(sum(self.trace.values()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field plus ``total_trace``."""
        return {**asdict(self), "total_trace": self.total_trace}


def layer_groups(model: nn.Module, tensors: Sequence[tuple[str, nn.Parameter]]
                 ) -> dict[str, list[int]]:
    """Indices into ``tensors`` per layer: one group per transformer block, in order,
    and :data:`OTHER_LAYER` for the rest (models without a block list: all ``other``)."""
    try:
        prefix, blocks = find_block_list(model)
    except InputError:
        prefix, blocks = "", nn.ModuleList()
    groups: dict[str, list[int]] = {f"{prefix}.{i}": [] for i in range(len(blocks))}
    groups[OTHER_LAYER] = []
    for index, (name, _) in enumerate(tensors):
        head, _, rest = name.partition(f"{prefix}.") if prefix else ("", "", "")
        block = rest.split(".", 1)[0] if rest and not head else ""
        key = f"{prefix}.{block}" if block.isdigit() else OTHER_LAYER
        groups.setdefault(key, []).append(index)
    return {key: members for key, members in groups.items() if members}


def measured_parameters(model: nn.Module, params: str = "trainable"
                        ) -> list[tuple[str, nn.Parameter]]:
    """The floating-point parameters measured: ``"trainable"`` (those with
    ``requires_grad``: what fine-tuning moves) or ``"all"``; tied tensors count once."""
    if params not in PARAM_SETS:
        raise InputError(f"hessian: params must be one of {', '.join(PARAM_SETS)}, "
                         f"got {params!r}")
    chosen = [(name, p) for name, p in model.named_parameters()
              if p.is_floating_point() and (params == "all" or p.requires_grad)]
    if not chosen:
        raise InputError(f"hessian: the model has no {params} floating-point parameters "
                         "to measure")
    return chosen


@contextlib.contextmanager
def _measurement_mode(model: nn.Module, tensors: Sequence[nn.Parameter]) -> Iterator[None]:
    """Eval mode (no dropout) and gradients on ``tensors`` only; both undone after."""
    modes = [(module, module.training) for module in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    chosen = {id(t) for t in tensors}
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(id(p) in chosen)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for module, training in modes:
            module.training = training


def _rademacher(tensors: Sequence[torch.Tensor], seed: int, sample: int) -> list[torch.Tensor]:
    """Probe vector ``sample`` of ``seed``: ±1 entries, drawn on the CPU so that the same
    seed gives the same vector on any device."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(sample))
    return [(torch.randint(0, 2, t.shape, generator=generator, dtype=torch.int8) * 2 - 1)
            .to(device=t.device, dtype=t.dtype) for t in tensors]


def _check_examples(examples: Sequence[Mapping[str, torch.Tensor]]) -> int:
    if isinstance(examples, str | bytes) or not isinstance(examples, Sequence) or not examples:
        raise InputError("hessian: need a non-empty list of probe examples")
    return len(examples)


def _quadratic_forms(model: nn.Module, examples: Sequence[Mapping[str, torch.Tensor]],
                     tensors: Sequence[nn.Parameter], groups: Mapping[str, list[int]],
                     vectors: Callable[[], Iterator[tuple[list[torch.Tensor], bool]]],
                     loss_fn: LossFn, chunk: int) -> tuple[list[dict[str, float]], float]:
    """Per-layer ``v_lᵀ (H v)_l`` of the mean probe loss for each vector ``v`` that
    ``vectors()`` yields (``(v, whole)``: ``whole`` adds ``vᵀ H v`` as ``"*"``), and
    the probe loss.  ``vectors`` is called once per chunk and must yield the same
    vectors each time (they are regenerated rather than kept)."""
    n = len(examples)
    forms: list[dict[str, float]] = []
    total_loss = 0.0
    for start in range(0, n, chunk):
        loss = sum(loss_fn(model, example) for example in examples[start:start + chunk]) / n
        total_loss += float(loss.detach())
        grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
        used = [(t, g) for t, g in zip(tensors, grads, strict=True) if g is not None]
        if not used:
            raise InputError("hessian: the probe loss does not depend on the measured "
                             "parameters")
        position = {id(t): i for i, (t, _) in enumerate(used)}
        for k, (vector, whole) in enumerate(vectors()):
            dot = sum((g * vector[i]).sum() for i, (_, g) in enumerate(zip(tensors, grads,
                                                                         strict=True))
                      if g is not None)
            products = torch.autograd.grad(dot, [t for t, _ in used], retain_graph=True,
                                           allow_unused=True)
            row: dict[str, float] = {}
            for layer, members in groups.items():
                value = 0.0
                for i in members:
                    j = position.get(id(tensors[i]))
                    if j is not None and products[j] is not None:
                        value += float((vector[i] * products[j]).sum())
                row[layer] = value
            if whole:
                row["*"] = sum(row.values())
            if k == len(forms):
                forms.append({key: 0.0 for key in row})
            for key, value in row.items():
                forms[k][key] += value
        del grads, used
    return forms, total_loss


def measure_hessian(model: nn.Module, examples: Sequence[Mapping[str, torch.Tensor]], *,
                    samples: int = 8, seed: int = 0,
                    reference: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | None
                    = None, params: str = "trainable", loss_fn: LossFn | None = None,
                    chunk: int = 8) -> HessianMeasurement:
    """Hutchinson trace per layer and, with ``reference`` weights θ0, the
    Hessian-weighted distance per layer of the probe loss at the model's weights.

    ``reference``: θ0 of the measured parameters, either a list in
    :func:`measured_parameters` order or a mapping name -> tensor.  ``loss_fn(model,
    example)`` replaces the target NLL.  ``chunk`` examples share one graph.  The model is
    left as it was (training flags, ``requires_grad``, weights).
    """
    n = _check_examples(examples)
    for name, value, low in (("samples", samples, 2), ("chunk", chunk, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"hessian: {name} must be an integer >= {low}, got {value!r}")
    named = measured_parameters(model, params)
    tensors = [p for _, p in named]
    groups = layer_groups(model, named)
    deltas = None if reference is None else _deltas(named, reference)
    loss_fn = loss_fn or target_loss
    started = time.perf_counter()
    with PeakMemory() as memory, _measurement_mode(model, tensors):

        def probe_vectors() -> Iterator[tuple[list[torch.Tensor], bool]]:
            for sample in range(samples):
                yield _rademacher(tensors, seed, sample), False

        def distance_vectors() -> Iterator[tuple[list[torch.Tensor], bool]]:
            assert deltas is not None
            for members in groups.values():
                keep = set(members)
                yield [d if i in keep else torch.zeros_like(d)
                       for i, d in enumerate(deltas)], False
            yield deltas, True

        estimates, loss = _quadratic_forms(model, examples, tensors, groups, probe_vectors,
                                           loss_fn, chunk)
        distance = total = None
        if deltas is not None:
            forms, _ = _quadratic_forms(model, examples, tensors, groups, distance_vectors,
                                        loss_fn, chunk)
            distance = {layer: forms[k][layer] for k, layer in enumerate(groups)}
            total = forms[-1]["*"]
    trace, stderr = {}, {}
    for layer in groups:
        values = [row[layer] for row in estimates]
        mean = sum(values) / samples
        trace[layer] = mean
        # samples >= 2 is checked above: the standard error needs two estimates.
        stderr[layer] = math.sqrt(sum((v - mean) ** 2 for v in values) / (samples - 1)
                                  / samples)
    return HessianMeasurement(
        layers=list(groups), n_params={layer: sum(tensors[i].numel() for i in members)
                                       for layer, members in groups.items()},
        trace=trace, trace_stderr=stderr, samples=samples, probe_size=n, seed=seed,
        loss=loss, seconds=time.perf_counter() - started, peak_rss_bytes=memory.peak_bytes,
        distance=distance, distance_total=total)


def _deltas(named: Sequence[tuple[str, nn.Parameter]],
            reference: Sequence[torch.Tensor] | Mapping[str, torch.Tensor]
            ) -> list[torch.Tensor]:
    """θ - θ0 per measured tensor, checked against the measured parameters' shapes."""
    if isinstance(reference, Mapping):
        missing = [name for name, _ in named if name not in reference]
        if missing:
            raise InputError(f"hessian: the reference weights lack {missing[0]!r} (and "
                             f"{len(missing) - 1} more); pass θ0 of every measured parameter")
        reference = [reference[name] for name, _ in named]
    if len(reference) != len(named):
        raise InputError(f"hessian: {len(reference)} reference tensors for "
                         f"{len(named)} measured parameters; pass one per parameter")
    out = []
    for (name, p), ref in zip(named, reference, strict=True):
        if tuple(ref.shape) != tuple(p.shape):
            raise InputError(f"hessian: reference for {name!r} has shape {tuple(ref.shape)}, "
                             f"the parameter {tuple(p.shape)}")
        out.append(p.detach() - ref.detach().to(p.device, p.dtype))
    return out


def snapshot(model: nn.Module, params: str = "trainable") -> list[torch.Tensor]:
    """A detached copy of the measured parameters (θ0 for a later distance)."""
    return [p.detach().clone() for _, p in measured_parameters(model, params)]
