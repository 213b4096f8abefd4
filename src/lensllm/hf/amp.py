"""Mixed precision and memory for fine-tuning runs: ``torch.amp`` autocast and loss
scaling, the token loss of a batch, out-of-memory detection and peak memory.

Precision (``training.precision``): ``fp32``; ``bf16`` or ``fp16`` run the forward pass
under ``torch.autocast`` (matrix products in half precision, the weights, the optimiser
state and the loss's softmax stay fp32); ``fp16`` adds a ``torch.amp.GradScaler``,
because fp16's narrow exponent range flushes small gradients to zero without it.
``auto`` is bf16 on a GPU that supports it and fp32 otherwise -- on CPUs bf16 matrix
products are rarely faster and only add round-off.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lensllm.errors import InputError
from lensllm.hf.tasks import IGNORE_INDEX
from lensllm.hf.trainconfig import PRECISIONS

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(setting: str, device: torch.device) -> str:
    """The precision a run on ``device`` uses for a ``training.precision`` setting."""
    if setting not in PRECISIONS:
        raise InputError(f"training: unknown precision {setting!r}; use one of "
                         f"{', '.join(PRECISIONS)}")
    if setting != "auto":
        return setting
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


@dataclass
class Precision:
    """Autocast and loss scaling of one run (resolved: fp32, bf16 or fp16)."""

    name: str
    device_type: str

    def __post_init__(self) -> None:
        # Loss scaling only for fp16; disabled, the scaler passes everything through.
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=_DTYPES[self.name])

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
             max_grad_norm: float | None) -> None:
        """Unscale (fp16), clip and step; with fp16 a step with inf/nan gradients is
        skipped and the scale lowered, as GradScaler does."""
        if max_grad_norm is not None:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        self.scaler.step(optimizer)
        self.scaler.update()


def release_memory(device: torch.device) -> None:
    """Give back what a failed step held, so a smaller micro-batch can have it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, int | None]]:
    """Track the peak memory allocated on a CUDA device within the block
    (``out["bytes"]``; None on a CPU, which has no per-run allocator statistics)."""
    out: dict[str, int | None] = {"bytes": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        if device.type == "cuda":
            out["bytes"] = int(torch.cuda.max_memory_allocated(device))


def decoder_inputs(model: Any, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing decoder inputs: the labels shifted right behind the start token."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    prepare = getattr(base, "prepare_decoder_input_ids_from_labels", None)
    if prepare is not None:
        return prepare(labels=labels)
    config = base.config
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    shifted = labels.new_full(labels.shape, pad)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = config.decoder_start_token_id
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad)


def loss_sum(model: Any, batch: dict[str, torch.Tensor],
             encoder_decoder: bool) -> tuple[torch.Tensor, int]:
    """Summed token NLL over the scored positions of a batch, and their count."""
    labels = batch["labels"]
    if encoder_decoder:
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_inputs(model, labels),
        ).logits
        targets = labels
    else:
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    scored = int(mask.sum())
    if scored == 0:
        return logits.sum() * 0.0, 0
    # Only the scored positions go through the softmax (padding and context cost
    # nothing), always in fp32: under autocast the logits may be bf16/fp16.
    loss = F.cross_entropy(logits[mask].float(), targets[mask], reduction="sum")
    return loss, scored


def scored_tokens(batch: dict[str, torch.Tensor], encoder_decoder: bool) -> int:
    """How many positions of a batch :func:`loss_sum` scores (without running the model)."""
    labels = batch["labels"] if encoder_decoder else batch["labels"][:, 1:]
    return int((labels != IGNORE_INDEX).sum())
