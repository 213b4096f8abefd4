"""Training FLOPs per token: forward 2N + activation gradients 2N + weight gradients 2T.

``N`` counts every parameter a token passes through, ``T`` the trainable ones: full
fine-tuning (T = N) is the familiar 6N, LoRA 4N + 2T = 4·N_base + 6·N_adapter.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _costs(model):
    from lensllm.hf.flops import model_costs  # lazily: the HF layer needs torch

    return model_costs(model)


class Toy(torch.nn.Module):
    """A decoder-only stand-in: 'base' layers and a small 'adapter'."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(is_encoder_decoder=False)
        self.base = torch.nn.Linear(16, 16)  # 272 parameters
        self.adapter = torch.nn.Linear(16, 2, bias=False)  # 32 parameters


def test_full_fine_tuning_is_six_n():
    model = Toy()
    costs, total, trainable = _costs(model)
    assert total == trainable == 304
    assert costs.decoder_train == 6 * 304 and costs.decoder_eval == 2 * 304
    assert costs.encoder_train == costs.encoder_eval == 0


def test_frozen_base_is_four_n_plus_two_t():
    model = Toy()
    model.base.requires_grad_(False)
    costs, total, trainable = _costs(model)
    assert (total, trainable) == (304, 32)
    assert costs.decoder_train == 4 * 304 + 2 * 32 == 4 * 272 + 6 * 32
    assert costs.decoder_eval == 2 * 304


class ToySeq2Seq(torch.nn.Module):
    """Encoder and decoder sharing an embedding, as T5's are."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(is_encoder_decoder=True)
        self.shared = torch.nn.Embedding(10, 4)  # 40 parameters
        self.encoder = torch.nn.Module()
        self.encoder.embed = self.shared
        self.encoder.layer = torch.nn.Linear(4, 4)  # 20 parameters
        self.decoder = torch.nn.Linear(4, 4, bias=False)  # 16 parameters

    def get_encoder(self):
        return self.encoder


def test_encoder_decoder_parts_and_a_shared_tensor():
    model = ToySeq2Seq()
    model.encoder.layer.requires_grad_(False)
    costs, total, trainable = _costs(model)
    assert (total, trainable) == (76, 56)  # the shared embedding once
    # The shared embedding is charged to both parts.
    assert costs.encoder_train == 4 * (40 + 20) + 2 * 40
    assert costs.decoder_train == 4 * (40 + 16) + 2 * (40 + 16)
    assert (costs.encoder_eval, costs.decoder_eval) == (2 * 60, 2 * 56)
