"""The fused head + cross-entropy of zoo pretraining against torch's own loss."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lensllm.zoo.fused_loss import linear_cross_entropy  # noqa: E402


def _reference(hidden, weight, targets):
    return torch.nn.functional.cross_entropy(hidden @ weight.t(), targets)


@pytest.mark.parametrize("rows, chunk_rows", [(37, 8), (64, 64), (50, 128), (9, 1)])
def test_loss_and_both_gradients_match_cross_entropy(rows: int, chunk_rows: int) -> None:
    generator = torch.Generator().manual_seed(rows)
    hidden = torch.randn(rows, 12, generator=generator, dtype=torch.float64)
    weight = torch.randn(50, 12, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 50, (rows,), generator=generator)
    grads = []
    for function in (_reference, lambda h, w, t: linear_cross_entropy(h, w, t, chunk_rows)):
        h = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        loss = function(h, w, targets)
        (3.0 * loss).backward()  # a scaled upstream gradient reaches both inputs
        grads.append((loss.detach(), h.grad, w.grad))
    for ours, theirs in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_tied_weight_gets_the_head_and_the_embedding_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(20, 6, generator=generator, requires_grad=True)
    tokens = torch.randint(0, 20, (4, 9), generator=generator)
    results = []
    for fused in (False, True):
        weight.grad = None
        hidden = torch.tanh(weight[tokens[:, :-1]]).reshape(-1, 6)
        targets = tokens[:, 1:].reshape(-1)
        loss = (linear_cross_entropy(hidden, weight, targets, 5) if fused
                else _reference(hidden, weight, targets))
        loss.backward()
        results.append((loss.detach(), weight.grad.clone()))
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


def test_gpt2_training_loss_equals_the_models_own_loss() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from lensllm.zoo.pretrain import training_loss

    config = GPT2Config(vocab_size=300, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"
    batch = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(1))
    own = model(input_ids=batch, labels=batch).loss
    own.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    ours = training_loss(model, batch)
    ours.backward()
    torch.testing.assert_close(ours, own, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("shapes, chunk_rows, message", [
    (((5, 4), (7, 3), (5,)), 2, "hidden [rows, d] and weight [vocabulary, d] expected"),
    (((5, 4), (7, 4), (4,)), 2, "one target per row expected: (4,) targets for 5 rows"),
    (((5, 4), (7, 4), (5,)), 0, "chunk_rows must be >= 1, got 0"),
])
def test_bad_shapes_say_what_was_expected(shapes, chunk_rows, message) -> None:
    hidden, weight, targets = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError) as caught:
        linear_cross_entropy(hidden, weight, targets.long(), chunk_rows)
    assert str(caught.value).startswith(message)
