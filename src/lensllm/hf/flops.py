"""FLOPs accounting of fine-tuning runs: what one token costs in each part of a model.

FLOPs (standard matmul counting, 2 FLOPs per parameter per token for a forward pass;
attention-score FLOPs ignored, as in the 6·N·D rule; every parameter, embeddings
included, counts as used by every token that passes through its part of the model):

* training, per token through a part with ``N`` parameters of which ``T`` train:
  forward ``2N`` + backward through activations ``2N`` + weight gradients ``2T``,
  i.e. ``4N + 2T``.  Full fine-tuning (``T = N``) gives the familiar ``6N``; LoRA
  gives ``4·N_base + 6·N_adapter`` (the adapters are part of ``N`` and are ``T``).
* evaluation (zero-shot, validation, test), per token: ``2N``, counted separately.
* encoder-decoder models: encoder tokens are charged the encoder's parameters and
  decoder (target) tokens the rest (decoder, LM head, shared embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lensllm.hf.tasks.tokenize import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelCosts:
    """Per-token FLOPs of the two parts of a model (a causal LM is all 'decoder')."""

    encoder_train: float
    decoder_train: float
    encoder_eval: float
    decoder_eval: float


def model_costs(model: Any) -> tuple[ModelCosts, int, int]:
    """Per-token FLOPs of the encoder and decoder parts, and the parameter counts."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    encoder = base.get_encoder() if getattr(base.config, "is_encoder_decoder", False) else None
    encoder_prefix = None
    if encoder is not None:
        encoder_prefix = next(
            (name + "." for name, module in base.named_modules() if module is encoder), None
        )
    sides: dict[int, tuple[torch.nn.Parameter, set[str]]] = {}
    for name, param in base.named_parameters(remove_duplicate=False):
        side = "encoder" if encoder_prefix and name.startswith(encoder_prefix) else "decoder"
        sides.setdefault(id(param), (param, set()))[1].add(side)
    totals = {"encoder": 0, "decoder": 0}
    trained = {"encoder": 0, "decoder": 0}
    for param, where in sides.values():
        # A shared (tied) tensor is charged to every part that uses it.
        for side in where:
            totals[side] += param.numel()
            if param.requires_grad:
                trained[side] += param.numel()
    total = sum(p.numel() for p, _ in sides.values())
    trainable = sum(p.numel() for p, _ in sides.values() if p.requires_grad)
    costs = ModelCosts(
        encoder_train=4.0 * totals["encoder"] + 2.0 * trained["encoder"],
        decoder_train=4.0 * totals["decoder"] + 2.0 * trained["decoder"],
        encoder_eval=2.0 * totals["encoder"],
        decoder_eval=2.0 * totals["decoder"],
    )
    return costs, total, trainable


def batch_tokens(batch: dict[str, torch.Tensor], encoder_decoder: bool) -> tuple[int, int]:
    """Real (unpadded) tokens of a batch: (encoder tokens, decoder tokens)."""
    real = int(batch["attention_mask"].sum())
    if encoder_decoder:
        return real, int((batch["labels"] != IGNORE_INDEX).sum())
    return 0, real
