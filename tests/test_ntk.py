"""Tests of the empirical-NTK measurement (lensllm.hf.ntk) on tiny models built from configs."""

from __future__ import annotations

import json
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may download weights
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
from torch import nn  # noqa: E402

from lensllm.core.curves import NTKSpectrum  # noqa: E402
from lensllm.core.laws.families import ntk_term  # noqa: E402
from lensllm.errors import InputError  # noqa: E402
from lensllm.hf.ntk import (  # noqa: E402
    find_block_list,
    measure_ntk,
    per_example_gradients,
    select_parameters,
    target_loss,
)

pytestmark = pytest.mark.torch

VOCAB = 64


# ----------------------------------------------------------------------------- fixtures

def _gpt2(n_layer: int = 2, n_embd: int = 16, tie: bool = True, seed: int = 0) -> nn.Module:
    cfg = transformers.GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=2, vocab_size=VOCAB,
                                  n_positions=32, bos_token_id=0, eos_token_id=0,
                                  tie_word_embeddings=tie)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg)


def _causal_examples(n: int = 5, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        ids = torch.randint(0, VOCAB, (8 + i,), generator=generator)
        labels = ids.clone()
        labels[:4] = -100  # the prompt is not scored
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def _seq2seq_examples(n: int = 4, seed: int = 2) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(2, VOCAB, (6 + i,), generator=generator),
             "labels": torch.randint(2, VOCAB, (4 + i,), generator=generator)}
            for i in range(n)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models gain nothing from intra-op threads, and on a shared CPU OpenMP barriers
    # make them several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gpt2() -> nn.Module:
    return _gpt2()


@pytest.fixture(scope="module")
def examples() -> list[dict[str, torch.Tensor]]:
    return _causal_examples()


@pytest.fixture(scope="module")
def measured(gpt2, examples):
    return measure_ntk(gpt2, examples, params="last", loss_floor=1.5)


class TinyMLP(nn.Module):
    def __init__(self, spare: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))
        if spare:
            self.spare = nn.Linear(2, 2)  # never called: its gradient columns are zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _mlp_loss(model: nn.Module, example: dict[str, torch.Tensor]) -> torch.Tensor:
    # A non-linear scalar per example, like a per-example NLL.
    return torch.nn.functional.softplus(model(example["x"])).sum()


# ----------------------------------------------------------------------------- (a) kernel

def test_kernel_equals_explicit_jacobian_product():
    model = TinyMLP()
    generator = torch.Generator().manual_seed(4)
    examples = [{"x": torch.randn(3, generator=generator)} for _ in range(7)]
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def losses_of(flat_params: torch.Tensor) -> torch.Tensor:
        pieces, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = int(np.prod(shape))
            pieces[name] = flat_params[offset:offset + size].reshape(shape)
            offset += size
        return torch.stack([
            torch.nn.functional.softplus(
                torch.func.functional_call(model, pieces, (ex["x"],))).sum()
            for ex in examples])

    jacobian = torch.autograd.functional.jacobian(losses_of, flat).double().numpy()
    result = measure_ntk(model, examples, params="all", loss_fn=_mlp_loss)
    np.testing.assert_allclose(result.kernel, jacobian @ jacobian.T, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(result.losses, losses_of(flat).detach().numpy(), rtol=1e-6)
    # A prefix subset is the matching block of Jacobian columns.
    second = result.n_params - sum(p.numel() for p in model.body[2].parameters())
    part = measure_ntk(model, examples, params=["body.2"], loss_fn=_mlp_loss)
    np.testing.assert_allclose(part.kernel, jacobian[:, second:] @ jacobian[:, second:].T,
                               rtol=1e-5, atol=1e-8)
    spare = measure_ntk(TinyMLP(spare=True), examples, params="all", loss_fn=_mlp_loss)
    assert spare.unused_params == ("spare.weight", "spare.bias")
    np.testing.assert_allclose(spare.kernel, result.kernel, rtol=1e-6)
    # The eigendecomposition reproduces K.
    rebuilt = (result.eigenvectors * result.eigenvalues) @ result.eigenvectors.T
    np.testing.assert_allclose(rebuilt, result.kernel, rtol=1e-9, atol=1e-9 * result.trace)


def test_gradient_rows_match_autograd_per_example(gpt2, examples):
    rows = per_example_gradients(gpt2, examples, params="all")
    names = dict(gpt2.named_parameters())
    for i in (0, len(examples) - 1):
        gpt2.zero_grad()
        gpt2.eval()
        target_loss(gpt2, examples[i]).backward()
        expected = torch.cat([names[n].grad.reshape(-1) for n in rows.selection.names])
        torch.testing.assert_close(rows.matrix[i], expected, rtol=1e-5, atol=1e-7)
    gpt2.zero_grad(set_to_none=True)


def test_target_loss_matches_hugging_face(gpt2, examples):
    gpt2.eval()
    with torch.no_grad():
        for example in examples[:2]:
            ours = target_loss(gpt2, example)
            theirs = gpt2(input_ids=example["input_ids"][None],
                          labels=example["labels"][None]).loss
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- (b) F(t)

@pytest.mark.parametrize("eta", [1e-3, 2e-2, 0.3])
def test_ntk_term_equals_matrix_exponential(measured, eta):
    scale = 1.0 / measured.top_eigenvalue
    for t in (0.0, 0.3 * scale / eta, 2.0 * scale / eta, 10.0 * scale / eta):
        residual = scipy.linalg.expm(-eta * t * measured.kernel) @ measured.residuals
        expected = float(residual @ residual)
        spectrum = measured.to_spectrum(learning_rate=eta, steps=t)
        got = float(ntk_term(spectrum.eigenvalues, spectrum.projections,
                             spectrum.learning_rate, spectrum.steps))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)
        assert float(measured.ntk_term(eta, t)) == pytest.approx(got, rel=1e-12)


def test_residual_and_summaries(measured):
    np.testing.assert_allclose(measured.residuals, measured.losses - 1.5)
    squared_norm = float(measured.residuals @ measured.residuals)
    assert measured.projections.sum() == pytest.approx(squared_norm)  # F(0) = |r0|^2
    assert np.all(np.diff(measured.eigenvalues) <= 0) and np.all(measured.eigenvalues >= 0)
    assert measured.trace == pytest.approx(measured.eigenvalues.sum(), rel=1e-9)
    assert 1.0 <= measured.effective_rank <= measured.n_examples
    spectrum = measured.to_spectrum(1e-3)
    assert isinstance(spectrum, NTKSpectrum) and spectrum.steps is None
    assert spectrum.info["n_examples"] == 5 and spectrum.info["subset"] == "last"
    assert spectrum.info["mean_target_tokens"] == pytest.approx(np.mean([4, 5, 6, 7, 8]))
    assert spectrum.info["peak_rss_bytes"] > 0 and spectrum.info["wall_seconds"] > 0
    # The spectrum round-trips through the JSON form lensllm stores.
    again = NTKSpectrum.from_dict(json.loads(json.dumps(spectrum.to_dict(), allow_nan=False)))
    np.testing.assert_allclose(again.projections, spectrum.projections)


def test_per_example_loss_floor(gpt2, examples):
    floors = [0.5, 1.0, 1.5, 2.0, 2.5]
    result = measure_ntk(gpt2, examples, params="last", loss_floor=floors)
    np.testing.assert_allclose(result.residuals, result.losses - np.array(floors))
    assert result.summary()["loss_floor"] == floors


# ----------------------------------------------------------------------------- (c) projection

@pytest.mark.parametrize("kind", ["sparse", "gaussian"])
def test_projection_is_seeded_and_preserves_the_kernel(gpt2, examples, measured, kind):
    exact = measured.kernel
    first = per_example_gradients(gpt2, examples, params="last", projection_dim=2048,
                                  projection=kind, seed=7)
    again = per_example_gradients(gpt2, examples, params="last", projection_dim=2048,
                                  projection=kind, seed=7, buffer_bytes=1)
    other = per_example_gradients(gpt2, examples, params="last", projection_dim=2048,
                                  projection=kind, seed=8)
    assert first.feature_dim == 2048 and first.n_params == measured.n_params > 2048
    # Same seed: the same sketch, whatever the buffering.
    torch.testing.assert_close(first.matrix, again.matrix, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(first.matrix, other.matrix)
    for rows in (first, other):
        k = rows.matrix.double() @ rows.matrix.double().T
        error = np.linalg.norm(k.numpy() - exact) / np.linalg.norm(exact)
        assert error < 0.2, error  # expected ~ sqrt((effective rank + 1) / k) ≈ 0.05


def test_projection_wider_than_the_subset_stays_exact(gpt2, examples, measured):
    result = measure_ntk(gpt2, examples, params="last", projection_dim=10**9, loss_floor=1.5)
    assert result.projection_dim is None
    np.testing.assert_allclose(result.kernel, measured.kernel, rtol=1e-10)


# ----------------------------------------------------------------------------- (d) subsets

def test_last_block_selection_on_gpt2(gpt2, examples):
    selection = select_parameters(gpt2, "last", probe=examples[0])
    assert selection.block_list == "transformer.h"
    assert {n.split(".")[2] for n in selection.names if n.startswith("transformer.h.")} == {"1"}
    assert [n for n in selection.names if not n.startswith("transformer.h.1.")] == [
        "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"]
    assert selection.cut_modules == ("transformer.wte",)  # the tied input embedding
    assert selection.numel == sum(p.numel() for p in gpt2.transformer.h[1].parameters()) \
        + sum(p.numel() for p in gpt2.transformer.ln_f.parameters()) + VOCAB * 16


def test_last_block_selection_on_llama(examples):
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, tie_word_embeddings=True,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    cfg._attn_implementation = "eager"
    torch.manual_seed(7)
    model = transformers.LlamaForCausalLM(cfg)
    selection = select_parameters(model, "last", probe=examples[0])
    assert all(n.startswith("model.layers.1.") for n in selection.names[:-2])
    assert selection.names[-2:] == ("model.norm.weight", "lm_head.weight")
    assert selection.cut_modules == ("model.embed_tokens",)


def test_last_with_tied_head_equals_an_untied_copy(examples):
    tied, untied = _gpt2(tie=True), _gpt2(tie=False)
    untied.load_state_dict(tied.state_dict(), strict=False)
    with torch.no_grad():
        untied.lm_head.weight.copy_(tied.lm_head.weight)
    a = measure_ntk(tied, examples, params="last")
    b = measure_ntk(untied, examples, params="last")
    assert b.param_names == a.param_names and not select_parameters(
        untied, "last", probe=examples[0]).cut_modules
    np.testing.assert_allclose(a.kernel, b.kernel, rtol=1e-5)
    # Naming the tied head explicitly keeps its input-embedding gradient too.
    full = measure_ntk(tied, examples, params=["lm_head"])
    head = measure_ntk(untied, examples, params=["lm_head"])
    assert not np.allclose(full.kernel, head.kernel, rtol=1e-3)


def test_last_equals_explicit_prefixes(examples):
    model = _gpt2(tie=False)
    last = measure_ntk(model, examples, params="last")
    named = measure_ntk(model, examples,
                        params=["transformer.h.1", "transformer.ln_f", "lm_head"])
    assert last.param_names == named.param_names
    np.testing.assert_allclose(last.kernel, named.kernel, rtol=1e-6)


def test_all_and_prefix_boundaries():
    model = _gpt2(n_layer=11, n_embd=8)
    everything = select_parameters(model, "all")
    assert everything.numel == sum(p.numel() for p in model.parameters())
    one = select_parameters(model, ["transformer.h.1."])
    assert one.names and all(n.startswith("transformer.h.1.") for n in one.names)
    both = select_parameters(model, ["transformer.h.1", "transformer.h.10", "transformer.h.1"])
    assert len(both.names) == 2 * len(one.names)  # duplicates count once


def test_measurement_restores_model_state(examples):
    model = _gpt2()
    model.train()
    model.transformer.h[0].attn.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    measure_ntk(model, examples[:2], params="last")
    assert model.training and all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated HF property
def test_lora_subset_selects_adapters(examples):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        _gpt2(), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"],
                                 fan_in_fan_out=True, init_lora_weights="gaussian"))
    selection = select_parameters(model, "lora")
    assert selection.names and all(".lora_A." in n or ".lora_B." in n for n in selection.names)
    assert selection.numel == sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = measure_ntk(model, examples, params="lora")
    assert result.n_params == selection.numel and result.top_eigenvalue > 0
    assert not result.unused_params
    assert find_block_list(model)[0] == "base_model.model.transformer.h"


# ----------------------------------------------------------------------------- (e) seq2seq

def test_t5_encoder_decoder():
    cfg = transformers.T5Config(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                                num_decoder_layers=2, num_heads=4, decoder_start_token_id=0,
                                pad_token_id=0, eos_token_id=1)
    cfg._attn_implementation = "eager"
    torch.manual_seed(5)
    model = transformers.T5ForConditionalGeneration(cfg)
    probe = _seq2seq_examples()
    selection = select_parameters(model, "last", probe=probe[0])
    assert selection.block_list == "decoder.block"
    assert all(n.startswith("decoder.block.1.") for n in selection.names[:-2])
    assert selection.names[-2:] == ("decoder.final_layer_norm.weight", "lm_head.weight")
    assert set(selection.cut_modules) == {"encoder.embed_tokens", "decoder.embed_tokens"}
    result = measure_ntk(model, probe, params="last")
    model.eval()
    with torch.no_grad():
        hf = [float(model(input_ids=ex["input_ids"][None], labels=ex["labels"][None]).loss)
              for ex in probe]
    np.testing.assert_allclose(result.losses, hf, rtol=1e-5)
    assert result.top_eigenvalue > 0 and result.effective_rank > 1
    # Explicit decoder inputs (here the same shift the model makes) give the same losses.
    shifted = [dict(ex, decoder_input_ids=model._shift_right(ex["labels"][None])[0])
               for ex in probe]
    again = measure_ntk(model, shifted, params="last")
    np.testing.assert_allclose(again.kernel, result.kernel, rtol=1e-5)


def test_bart_encoder_decoder():
    cfg = transformers.BartConfig(vocab_size=VOCAB, d_model=16, encoder_layers=1,
                                  decoder_layers=2, encoder_attention_heads=2,
                                  decoder_attention_heads=2, encoder_ffn_dim=32,
                                  decoder_ffn_dim=32, max_position_embeddings=32)
    cfg._attn_implementation = "eager"
    torch.manual_seed(6)
    model = transformers.BartForConditionalGeneration(cfg)
    result = measure_ntk(model, _seq2seq_examples(), params="last")
    assert result.param_names[-1] == "lm_head.weight"
    assert all(n.startswith("model.decoder.layers.1.") for n in result.param_names[:-1])
    assert result.top_eigenvalue > 0


# ----------------------------------------------------------------------------- (f) bad input

def _bad(**changes):
    example = _causal_examples(1)[0]
    example.update(changes)
    return [{k: v for k, v in example.items() if v is not None}]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"examples": []},
     "ntk: the probe set is empty; pass at least one example (a dict with 'input_ids' and "
     "'labels')"),
    ({"params": "head"},
     "ntk: unknown parameter subset 'head'; use 'all', 'last', 'lora' or a list of "
     "parameter-name prefixes (e.g. ['transformer.h.3'])"),
    ({"params": ["transformer.h.9"]},
     "ntk: parameter-name prefix 'transformer.h.9' matches no parameter of GPT2LMHeadModel "
     "(names look like: transformer.wte.weight, transformer.wpe.weight, "
     "transformer.h.0.ln_1.weight, ...)"),
    ({"params": []}, "ntk: the list of parameter-name prefixes is empty"),
    ({"params": "lora"},
     "ntk: params='lora' needs a peft model (peft.get_peft_model(...)); GPT2LMHeadModel has "
     "no adapters"),
    ({"examples": _bad(labels=None)}, "ntk: examples[0] has no 'labels'"),
    ({"examples": _bad(labels=torch.full((8,), -100))},
     "ntk: examples[0] has no target tokens (every scored label is -100); a probe example "
     "needs at least one target token"),
    ({"examples": _bad(labels=torch.zeros(5, dtype=torch.long))},
     "ntk: examples[0]['labels'] has length 5, expected 8 (the length of 'input_ids'; mark "
     "non-target positions with -100)"),
    ({"examples": _bad(input_ids=torch.zeros(1, 8, dtype=torch.long))},
     "ntk: examples[0]['input_ids'] must be a 1-D integer tensor (got (1, 8))"),
    ({"examples": _bad(input_ids=torch.full((8,), VOCAB))},
     f"ntk: examples[0]['input_ids'] holds token id {VOCAB}; ids must be in 0..{VOCAB - 1}"),
    ({"examples": _bad(label=torch.zeros(8, dtype=torch.long))},
     "ntk: examples[0] has unknown key(s) 'label'; allowed: input_ids, labels, "
     "attention_mask"),
    ({"examples": _bad(decoder_input_ids=torch.zeros(3, dtype=torch.long))},
     "ntk: examples[0] has 'decoder_input_ids', but the model is not an encoder-decoder"),
    ({"projection_dim": 0}, "ntk: projection_dim must be a whole number >= 1 (got 0)"),
    ({"projection_dim": 8, "projection": "srht"},
     "ntk: unknown projection 'srht'; use 'sparse' or 'gaussian'"),
    ({"loss_floor": [1.0, 2.0]},
     "ntk: loss_floor must be a number or one number per example (1); got shape (2,)"),
    ({"loss_floor": float("nan")}, "ntk: loss_floor must be a finite number (got nan)"),
])
def test_bad_inputs_raise_input_error(gpt2, kwargs, message):
    args = {"examples": _causal_examples(1), **kwargs}
    with pytest.raises(InputError) as caught:
        measure_ntk(gpt2, args.pop("examples"), **args)
    assert str(caught.value) == message


def test_bad_models_raise_input_error(examples):
    with pytest.raises(InputError) as caught:
        measure_ntk(TinyMLP(), [{"x": torch.zeros(3)}], params="last", loss_fn=_mlp_loss)
    assert str(caught.value) == (
        "ntk: params='last' needs a transformer block list (an nn.ModuleList of blocks) and "
        "TinyMLP has none; use params='all' or a list of parameter-name prefixes")
    with pytest.raises(InputError) as caught:
        measure_ntk(_gpt2().half(), examples, params="all")
    assert str(caught.value) == (
        "ntk: parameter 'transformer.wte.weight' is float16; the NTK is measured in float32: "
        "call model.float() first")
    with pytest.raises(InputError) as caught:
        measure_ntk("gpt2", examples)
    assert str(caught.value) == "ntk: 'model' must be a torch.nn.Module (got str)"
