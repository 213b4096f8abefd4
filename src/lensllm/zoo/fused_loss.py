"""The language-model head and its cross-entropy in one pass over row chunks.

Pretraining a tiny model on CPU spends much of each step moving the logits
(tokens x vocabulary floats, tens of MB) through memory: the head's matmul writes
them, log-softmax reads and writes them, and the backward pass does both again.
:class:`LinearCrossEntropy` computes the loss *and* both gradients chunk by chunk in
the forward pass, so each chunk of logits is produced and consumed while it is still
in the CPU cache; the backward pass only scales the stored gradients.  Same math as
``cross_entropy(hidden @ weight.T, targets)`` with a mean over all rows; the floats
differ by rounding only (the tests compare both).
"""

from __future__ import annotations

from typing import Any

#: rows of logits per chunk: 128 x a 4,096-token vocabulary is 2 MB, a core's L2
DEFAULT_CHUNK_ROWS = 128


def _linear_cross_entropy_class() -> Any:
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, chunk_rows):  # type: ignore[override]
            rows = hidden.shape[0]
            grad_hidden = torch.empty_like(hidden)
            grad_weight = torch.zeros_like(weight)
            total = hidden.new_zeros((), dtype=torch.float64)
            for start in range(0, rows, chunk_rows):
                h = hidden[start:start + chunk_rows]
                t = targets[start:start + chunk_rows]
                logits = h @ weight.t()
                log_normalizer = torch.logsumexp(logits, dim=-1)
                picked = logits.gather(1, t[:, None]).squeeze(1)
                total += (log_normalizer - picked).sum(dtype=torch.float64)
                # d loss / d logits = (softmax - one_hot) / rows, built in place.
                probabilities = logits.sub_(log_normalizer[:, None]).exp_()
                probabilities[torch.arange(len(t)), t] -= 1.0
                probabilities.div_(rows)
                grad_hidden[start:start + chunk_rows] = probabilities @ weight
                grad_weight.addmm_(probabilities.t(), h)
            ctx.save_for_backward(grad_hidden, grad_weight)
            return (total / rows).to(hidden.dtype)

        @staticmethod
        def backward(ctx, grad_loss):  # type: ignore[override]
            grad_hidden, grad_weight = ctx.saved_tensors
            return grad_hidden * grad_loss, grad_weight * grad_loss, None, None

    return LinearCrossEntropy


_FUNCTION: Any = None


def linear_cross_entropy(hidden: Any, weight: Any, targets: Any,
                         chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Any:
    """Mean cross-entropy of ``hidden @ weight.T`` (rows x vocabulary logits) against
    ``targets`` (row indices into the vocabulary), differentiable in ``hidden`` and
    ``weight``.  ``hidden`` is [rows, d], ``weight`` [vocabulary, d]; every row counts
    (no ignore index: pretraining blocks have no padding)."""
    global _FUNCTION
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [rows, d] and weight [vocabulary, d] expected, got "
                         f"{tuple(hidden.shape)} and {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"one target per row expected: {tuple(targets.shape)} targets "
                         f"for {hidden.shape[0]} rows")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if _FUNCTION is None:
        _FUNCTION = _linear_cross_entropy_class()
    return _FUNCTION.apply(hidden, weight, targets, int(chunk_rows))
