"""Tests of the Hessian measurements (lensllm.hf.hessian) against exact Hessians."""

from __future__ import annotations

import json
import math
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from lensllm.errors import InputError  # noqa: E402
from lensllm.hf.hessian import (  # noqa: E402
    OTHER_LAYER,
    measure_hessian,
    measured_parameters,
    snapshot,
)

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyNet(nn.Module):
    """Two tanh blocks in a ModuleList between an input and an output layer: a loss whose
    Hessian is dense, not block-diagonal, and not constant."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(3, 4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        for block in self.blocks:
            h = torch.tanh(block(h))
        return self.head(h)


def _loss(model: nn.Module, example: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((model(example["x"]) - example["y"]) ** 2).mean()


def _examples(n: int = 6) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    return [{"x": torch.randn(5, 3, generator=generator),
             "y": torch.randn(5, 1, generator=generator)} for _ in range(n)]


def _exact_hessian(model: nn.Module, examples) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """The full Hessian of the mean probe loss over the flattened parameters."""
    named = [(name, p) for name, p in model.named_parameters()]
    shapes = [(name, p.shape, p.numel()) for name, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, shape, size in shapes:
            params[name] = vector[offset:offset + size].reshape(shape)
            offset += size
        return sum(((functional_call(model, params, (ex["x"],)) - ex["y"]) ** 2).mean()
                   for ex in examples) / len(examples)

    hessian = torch.autograd.functional.hessian(loss_of, flat)
    return hessian, [(name, size) for name, _, size in shapes]


def _layer_slices(layout: list[tuple[str, int]]) -> dict[str, list[int]]:
    slices: dict[str, list[int]] = {}
    offset = 0
    for name, size in layout:
        layer = ".".join(name.split(".")[:2]) if name.startswith("blocks.") else OTHER_LAYER
        slices.setdefault(layer, []).extend(range(offset, offset + size))
        offset += size
    return slices


def test_trace_matches_the_exact_hessian_within_its_standard_error():
    model, examples = TinyNet(), _examples()
    hessian, layout = _exact_hessian(model, examples)
    measured = measure_hessian(model, examples, samples=400, seed=1, loss_fn=_loss, chunk=4)
    slices = _layer_slices(layout)
    assert measured.layers == ["blocks.0", "blocks.1", OTHER_LAYER]
    for layer, index in slices.items():
        exact = float(hessian[index][:, index].diagonal().sum())
        error = abs(measured.trace[layer] - exact)
        assert measured.trace_stderr[layer] > 0
        assert error <= 3.5 * measured.trace_stderr[layer], (layer, exact, measured.trace)
        assert measured.n_params[layer] == len(index)
    assert measured.total_trace == pytest.approx(sum(measured.trace.values()))
    with torch.no_grad():
        loss = float(sum(_loss(model, ex) for ex in examples) / len(examples))
    assert measured.loss == pytest.approx(loss, rel=1e-5)


def test_same_seed_same_result_and_other_seed_differs():
    model, examples = TinyNet(), _examples()
    one = measure_hessian(model, examples, samples=4, seed=7, loss_fn=_loss)
    two = measure_hessian(model, examples, samples=4, seed=7, loss_fn=_loss, chunk=2)
    other = measure_hessian(model, examples, samples=4, seed=8, loss_fn=_loss)
    for layer in one.layers:
        # Chunking regroups the sum over examples: equal up to round-off.
        assert two.trace[layer] == pytest.approx(one.trace[layer], rel=1e-5)
    again = measure_hessian(model, examples, samples=4, seed=7, loss_fn=_loss)
    assert again.trace == one.trace
    assert other.trace != one.trace


def test_distance_equals_the_explicit_quadratic_form():
    model, examples = TinyNet(), _examples()
    reference = snapshot(model)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    hessian, layout = _exact_hessian(model, examples)
    delta = torch.cat([(p.detach() - r).reshape(-1)
                       for p, r in zip(model.parameters(), reference, strict=True)])
    measured = measure_hessian(model, examples, samples=2, loss_fn=_loss, reference=reference)
    for layer, index in _layer_slices(layout).items():
        d = delta[index]
        exact = float(d @ hessian[index][:, index] @ d)
        assert measured.distance[layer] == pytest.approx(exact, rel=1e-4, abs=1e-7)
    assert measured.distance_total == pytest.approx(float(delta @ hessian @ delta), rel=1e-4)
    # By name gives the same as by position.
    names = [name for name, _ in measured_parameters(model)]
    by_name = measure_hessian(model, examples, samples=2, loss_fn=_loss,
                              reference=dict(zip(names, reference, strict=True)))
    assert by_name.distance == measured.distance


def test_gpt2_per_block_and_model_left_as_it_was():
    cfg = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=64,
                                  n_positions=32)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    model.train()
    model.transformer.wte.weight.requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    generator = torch.Generator().manual_seed(1)
    examples = []
    for i in range(3):
        ids = torch.randint(0, 64, (8 + i,), generator=generator)
        labels = ids.clone()
        labels[:3] = -100
        examples.append({"input_ids": ids, "labels": labels})
    measured = measure_hessian(model, examples, samples=3, seed=0,
                               reference=snapshot(model))
    assert measured.layers == ["transformer.h.0", "transformer.h.1", OTHER_LAYER]
    # The frozen (tied) embedding is not measured: what fine-tuning moves is.
    assert sum(measured.n_params.values()) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    assert all(math.isfinite(v) for v in measured.trace.values())
    assert measured.distance == {layer: 0.0 for layer in measured.layers}
    json.dumps(measured.to_dict(), allow_nan=False)
    assert model.training and not model.transformer.wte.weight.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"samples": 1}, "hessian: samples must be an integer >= 2, got 1"),
    ({"seed": -1}, "hessian: seed must be an integer >= 0, got -1"),
    ({"params": "last"}, "hessian: params must be one of trainable, all, got 'last'"),
    ({"reference": [torch.zeros(1)]}, "hessian: 1 reference tensors for 8 measured "
                                      "parameters; pass one per parameter"),
    ({"reference": {}}, "hessian: the reference weights lack 'embed.weight' (and 7 more); "
                        "pass θ0 of every measured parameter"),
])
def test_bad_inputs(kwargs, message):
    with pytest.raises(InputError) as caught:
        measure_hessian(TinyNet(), _examples(2), loss_fn=_loss, **kwargs)
    assert str(caught.value) == message


def test_no_examples():
    with pytest.raises(InputError, match=r"^hessian: need a non-empty list of probe examples$"):
        measure_hessian(TinyNet(), [], loss_fn=_loss)
