"""Per-example gradient rows of the per-example target loss.

Row i of G is ∇_θ ℓᵢ(θ) restricted to the selected parameters (concatenated in selection
order, each tensor flattened), where ℓᵢ is the mean target-token NLL of probe example i
(:func:`lensllm.hf.ntk.examples.target_loss`, or a caller's ``loss_fn``).  On CPU a plain loop
of ``torch.autograd.grad``, one example at a time, writing into a preallocated matrix is
both faster and leaner than ``torch.func.vmap`` (which materialises per-example activations
of the whole batch at once); no higher-order graph is ever built.

Memory: without projection G is N × P fp32 (4 N P bytes).  With a projection to k
dimensions the rows go through a buffer of ``buffer_rows`` full gradients (chosen from
``buffer_bytes``) that is projected each time it fills, so memory is about
``min(N, buffer_rows) × P × 4 + N × k × 4`` bytes and the random projection is generated
``ceil(N / buffer_rows)`` times.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lensllm.errors import InputError
from lensllm.hf.ntk.examples import count_target_tokens, target_loss, validate_examples
from lensllm.hf.ntk.params import LossFn, ParameterSelection, select_parameters
from lensllm.hf.ntk.projection import RandomProjection

DEFAULT_BUFFER_BYTES = 512 * 2**20


@dataclass(frozen=True)
class PerExampleGradients:
    """Gradient rows G (N × D, fp32; D = P, or k when projected) and the per-example losses.

    ``unused`` names selected tensors that received no gradient from any example (their
    columns are zero).
    """

    matrix: torch.Tensor = field(repr=False)
    losses: np.ndarray = field(repr=False)
    selection: ParameterSelection
    projection_dim: int | None
    projection: str | None
    seed: int
    unused: tuple[str, ...]
    target_tokens: np.ndarray = field(repr=False)
    seconds: float

    @property
    def n_examples(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_params(self) -> int:
        """P, the number of selected parameters (before any projection)."""
        return self.selection.numel

    @property
    def feature_dim(self) -> int:
        """Length of a stored row: P, or k when projected."""
        return int(self.matrix.shape[1])


@contextlib.contextmanager
def measurement_mode(model: nn.Module, selection: ParameterSelection) -> Iterator[None]:
    """Eval mode, gradients on the selected tensors only, tied-embedding cuts; all undone after.

    Turning ``requires_grad`` off elsewhere means the forward keeps no activations for, and
    the backward never enters, the parts of the model in front of the selection.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    chosen = {id(t) for t in selection.tensors}
    handles = []
    try:
        model.eval()  # no dropout: the kernel of the deterministic network
        for p, _ in flags:
            p.requires_grad_(id(p) in chosen)
        for name in dict.fromkeys(selection.cut_modules):
            handles.append(model.get_submodule(name).register_forward_hook(_detach_output))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        for module, training in modes:
            module.training = training


def _detach_output(module: nn.Module, args: object, output: object) -> object:
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, tuple | list):
        return type(output)(o.detach() if isinstance(o, torch.Tensor) else o for o in output)
    return output


def _check_fp32(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.dtype != torch.float32:
            raise InputError(
                f"ntk: parameter {name!r} is {str(p.dtype).removeprefix('torch.')}; the NTK is "
                "measured in float32: call model.float() first"
            )


def per_example_gradients(
    model: nn.Module,
    examples: Sequence[Mapping[str, torch.Tensor]],
    *,
    params: str | Sequence[str] | ParameterSelection = "last",
    projection_dim: int | None = None,
    projection: str = "sparse",
    seed: int = 0,
    loss_fn: LossFn | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> PerExampleGradients:
    """Gradient rows of each example's target loss w.r.t. a parameter subset.

    Args:
        model: a float32 ``nn.Module``; a Hugging Face causal or encoder-decoder LM (also
            wrapped by peft) when ``loss_fn`` is None.  It is put in eval mode and its
            ``requires_grad`` flags are changed during the call and restored afterwards.
        examples: the probe set, N dicts of 1-D LongTensors (``input_ids``, ``labels``,
            optional ``attention_mask``; see :mod:`lensllm.hf.ntk.examples`).  With a custom
            ``loss_fn`` anything that function accepts.
        params: ``"all"``, ``"last"``, ``"lora"``, a list of parameter-name prefixes (see
            :mod:`lensllm.hf.ntk.params`), or a ready :class:`ParameterSelection`.
        projection_dim: k for a seeded random projection of each row; None keeps exact
            rows.  When k >= P the rows are kept exact (no projection can do better).
        projection: ``"sparse"`` (CountSketch) or ``"gaussian"``; see
            :mod:`lensllm.hf.ntk.projection`.
        seed: seed of the projection.
        loss_fn: ``loss_fn(model, example) -> scalar tensor``; default
            :func:`~lensllm.hf.ntk.examples.target_loss`.
        buffer_bytes: memory allowed for full-length rows waiting to be projected.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"ntk: 'model' must be a torch.nn.Module (got {type(model).__name__})")
    if loss_fn is None:
        validate_examples(model, examples)
        loss_fn = target_loss
    elif isinstance(examples, Mapping | str) or not isinstance(examples, Sequence):
        raise InputError("ntk: 'examples' must be a list of probe examples")
    elif len(examples) == 0:
        raise InputError("ntk: the probe set is empty; pass at least one example")
    _check_fp32(model)
    if not isinstance(params, ParameterSelection):
        params = select_parameters(model, params, probe=examples[0], loss_fn=loss_fn)
    selection = params
    sizes = [t.numel() for t in selection.tensors]
    total = sum(sizes)
    projector = None
    if projection_dim is not None:
        projector = RandomProjection(selection.names, sizes, projection_dim, seed=seed,
                                     kind=projection)
        if projection_dim >= total:
            projector = None
    if isinstance(buffer_bytes, bool) or not isinstance(buffer_bytes, int) or buffer_bytes < 1:
        raise InputError(f"ntk: buffer_bytes must be a whole number >= 1 (got {buffer_bytes!r})")

    n = len(examples)
    device = selection.tensors[0].device
    if projector is None:
        out = torch.empty(n, total, dtype=torch.float32, device=device)
        buffer = out
    else:
        out = torch.zeros(n, projector.dim, dtype=torch.float32, device=device)
        rows = max(1, min(n, buffer_bytes // (4 * total)))
        buffer = torch.empty(rows, total, dtype=torch.float32, device=device)
    losses = np.empty(n)
    used = [False] * len(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()

    start = time.perf_counter()
    pending = 0  # rows filled in the projection buffer
    with torch.enable_grad(), measurement_mode(model, selection):
        for i, example in enumerate(examples):
            loss = loss_fn(model, example)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise InputError(f"ntk: the loss of examples[{i}] is not a scalar tensor")
            value = float(loss.detach())
            if not math.isfinite(value):
                raise InputError(f"ntk: the loss of examples[{i}] is {value}; check the model")
            if not loss.requires_grad:
                raise InputError(
                    f"ntk: the loss of examples[{i}] does not depend on the selected parameters"
                )
            grads = torch.autograd.grad(loss.reshape(()), selection.tensors, allow_unused=True)
            row = buffer[pending if projector is not None else i]
            for j, grad in enumerate(grads):
                segment = row[offsets[j]:offsets[j + 1]]
                if grad is None:
                    segment.zero_()
                else:
                    used[j] = True
                    segment.copy_(grad.reshape(-1))
            del grads, loss
            losses[i] = value
            if projector is not None:
                pending += 1
                if pending == buffer.shape[0] or i == n - 1:
                    projector.project_into(buffer[:pending], out[i + 1 - pending:i + 1])
                    pending = 0
    seconds = time.perf_counter() - start

    if loss_fn is target_loss:
        tokens = np.array([count_target_tokens(model, ex) for ex in examples])
    else:
        tokens = np.zeros(n, dtype=int)
    return PerExampleGradients(
        matrix=out, losses=losses, selection=selection,
        projection_dim=projector.dim if projector is not None else None,
        projection=projector.kind if projector is not None else None, seed=seed,
        unused=tuple(name for name, u in zip(selection.names, used, strict=True) if not u),
        target_tokens=tokens, seconds=seconds,
    )
