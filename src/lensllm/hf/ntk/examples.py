"""Probe examples and the per-example target loss whose gradients define the eNTK.

A probe example is a ``dict`` of 1-D integer tensors (one sequence, no batch axis):

``input_ids`` (required)
    The token ids the model reads: prompt + target for a decoder-only (causal) model,
    the source sequence for an encoder-decoder model.
``labels`` (required)
    The token ids to score, ``-100`` where a position is not part of the target (prompt,
    padding).  Causal models: same length as ``input_ids`` and aligned with it, exactly as
    in Hugging Face training (``labels[j]`` is predicted from positions ``< j``; the shift
    happens inside :func:`target_loss`, so ``labels[0]`` is never scored).
    Encoder-decoder models: the target sequence (decoder length); ``labels[j]`` is
    predicted by decoder position ``j``.
``attention_mask`` (optional)
    Same length as ``input_ids``; defaults to all ones.
``decoder_input_ids``, ``decoder_attention_mask`` (optional, encoder-decoder only)
    Same length as ``labels``.  Without ``decoder_input_ids`` the model builds them by
    shifting ``labels`` right, as it does in training.

Each example runs alone (batch size 1), so sequences may have different lengths and need
no padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lensllm.errors import InputError

IGNORE_INDEX = -100
REQUIRED_KEYS = ("input_ids", "labels")
OPTIONAL_KEYS = ("attention_mask", "decoder_input_ids", "decoder_attention_mask")
DECODER_KEYS = ("decoder_input_ids", "decoder_attention_mask")


def model_config(model: nn.Module) -> Any:
    """The Hugging Face config of ``model`` (also through a peft wrapper), or None."""
    return getattr(model, "config", None)


def is_encoder_decoder(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face encoder-decoder (labels go to the decoder)."""
    return bool(getattr(model_config(model), "is_encoder_decoder", False))


def _vocab_size(model: nn.Module) -> int | None:
    size = getattr(model_config(model), "vocab_size", None)
    return int(size) if isinstance(size, int) and size > 0 else None


def _check_ids(tensor: Any, where: str, vocab: int | None, allow_ignore: bool) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dtype.is_floating_point \
            or tensor.dtype.is_complex or tensor.dtype == torch.bool or tensor.dim() != 1:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InputError(f"{where} must be a 1-D integer tensor (got {shape})")
    if tensor.numel() == 0:
        raise InputError(f"{where} is empty")
    valid = tensor >= 0
    if allow_ignore:
        valid |= tensor == IGNORE_INDEX
    if vocab is not None:
        valid &= tensor < vocab
    if not bool(valid.all()):
        bad = int(tensor[~valid][0])
        allowed = f"0..{vocab - 1}" if vocab is not None else ">= 0"
        extra = " or -100" if allow_ignore else ""
        raise InputError(f"{where} holds token id {bad}; ids must be in {allowed}{extra}")


def _check_mask(tensor: Any, where: str, length: int) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1:
        raise InputError(f"{where} must be a 1-D tensor of 0/1")
    if tensor.numel() != length:
        raise InputError(f"{where} has length {tensor.numel()}, expected {length}")


def validate_examples(model: nn.Module, examples: Sequence[Mapping[str, Any]]) -> None:
    """Check the probe set against the format above; raise :class:`InputError` if wrong."""
    if isinstance(examples, Mapping) or not isinstance(examples, Sequence):
        raise InputError(
            "ntk: 'examples' must be a list of dicts with 'input_ids' and 'labels' tensors"
        )
    if len(examples) == 0:
        raise InputError(
            "ntk: the probe set is empty; pass at least one example "
            "(a dict with 'input_ids' and 'labels')"
        )
    seq2seq = is_encoder_decoder(model)
    vocab = _vocab_size(model)
    allowed = (*REQUIRED_KEYS, *OPTIONAL_KEYS) if seq2seq else (*REQUIRED_KEYS, "attention_mask")
    for i, example in enumerate(examples):
        where = f"ntk: examples[{i}]"
        if not isinstance(example, Mapping):
            raise InputError(f"{where} must be a dict with 'input_ids' and 'labels' tensors")
        for key in REQUIRED_KEYS:
            if key not in example:
                raise InputError(f"{where} has no {key!r}")
        unknown = sorted(set(example) - set(allowed))
        if unknown:
            if not seq2seq and set(unknown) & set(DECODER_KEYS):
                raise InputError(
                    f"{where} has {unknown[0]!r}, but the model is not an encoder-decoder"
                )
            raise InputError(
                f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed)}"
            )
        input_ids, labels = example["input_ids"], example["labels"]
        _check_ids(input_ids, f"{where}['input_ids']", vocab, allow_ignore=False)
        _check_ids(labels, f"{where}['labels']", vocab, allow_ignore=True)
        if "attention_mask" in example:
            _check_mask(example["attention_mask"], f"{where}['attention_mask']",
                        input_ids.numel())
        if seq2seq:
            if "decoder_input_ids" in example:
                _check_ids(example["decoder_input_ids"], f"{where}['decoder_input_ids']",
                           vocab, allow_ignore=False)
                if example["decoder_input_ids"].numel() != labels.numel():
                    raise InputError(
                        f"{where}['decoder_input_ids'] has length "
                        f"{example['decoder_input_ids'].numel()}, expected {labels.numel()} "
                        "(the length of 'labels')"
                    )
            if "decoder_attention_mask" in example:
                _check_mask(example["decoder_attention_mask"],
                            f"{where}['decoder_attention_mask']", labels.numel())
            scored = labels
        else:
            if labels.numel() != input_ids.numel():
                raise InputError(
                    f"{where}['labels'] has length {labels.numel()}, expected "
                    f"{input_ids.numel()} (the length of 'input_ids'; mark non-target "
                    "positions with -100)"
                )
            scored = labels[1:]  # labels[0] has no preceding position to predict it
        if not bool((scored != IGNORE_INDEX).any()):
            raise InputError(
                f"{where} has no target tokens (every scored label is -100); "
                "a probe example needs at least one target token"
            )


def target_loss(model: nn.Module, example: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood of the target tokens of one example (a scalar tensor).

    Target tokens are the positions with ``labels != -100``; causal models shift the labels
    by one position as Hugging Face training does.  Log-probabilities are taken in fp32 over
    the scored positions only (the full-sequence log-softmax is never needed).
    """
    device = next(model.parameters()).device
    batch = {key: value.to(device).unsqueeze(0) for key, value in example.items()}
    labels = batch.pop("labels")
    config = model_config(model)
    if config is not None and getattr(config, "use_cache", None) is not None:
        batch["use_cache"] = False  # a KV cache is dead weight for a single forward pass
    if is_encoder_decoder(model):
        if "decoder_input_ids" not in batch:
            # The model derives decoder inputs from the labels exactly as in training.
            batch["labels"] = labels
        logits = model(**batch).logits[0]
        targets = labels[0]
    else:
        logits = model(**batch).logits[0, :-1]
        targets = labels[0, 1:]
    scored = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits[scored].float(), dim=-1)
    return -log_probs.gather(1, targets[scored].unsqueeze(1)).mean()


def count_target_tokens(model: nn.Module, example: Mapping[str, torch.Tensor]) -> int:
    """Number of scored target tokens of one example (after the causal shift)."""
    labels = example["labels"]
    scored = labels if is_encoder_decoder(model) else labels[1:]
    return int((scored != IGNORE_INDEX).sum())
