"""Pretraining one zoo candidate from scratch: token blocks, GPT-2 config, the loop.

``pretrain_steps`` optimizer steps of ``batch_size`` x ``seq_len`` tokens with AdamW
(betas 0.9/0.95, weight decay on matrices but not on position embeddings), linear
warm-up over 5 % of the steps, cosine decay to 10 % of the learning rate, and
gradient clipping at 1.

Each step's loss comes from the final hidden states through
:func:`lensllm.zoo.fused_loss.linear_cross_entropy` (the tied head and its
cross-entropy chunk by chunk, in cache) with the blocks' tanh-GELU as torch's one
kernel: the same function as the saved config's ``gelu_new`` and the model's own
loss, in less time per step on CPU (``benchmarks/pretrain_step.py`` measures both).

The loop is not :func:`lensllm.hf.train.run_finetune`'s, on purpose: that one
fine-tunes a loaded checkpoint on a task's splits with early stopping, FLOPs
accounting and a masked loss, while this one pretrains on fixed token blocks with
the schedule, parameter groups and loss that the zoo's recorded weights came from;
sharing them would change every cached candidate.  What both need from torch -- a
pinned thread count -- comes from :mod:`lensllm.hf.runtime`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.zoo.fused_loss import linear_cross_entropy
from lensllm.zoo.recipes import CandidateSpec, ZooRecipe, derive_seed

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class PretrainingData:
    train: Any  # LongTensor [n_blocks, seq_len]
    heldout: Any  # LongTensor [n_heldout, seq_len]
    tokens: int


def pretraining_blocks(tokenizer_dir: Path, books: Sequence[str], recipe: ZooRecipe
                        ) -> PretrainingData:
    """The corpus as one token stream (books separated by end-of-text) cut into blocks.

    Every ``heldout_every``-th block is held out, a split that does not depend on the
    seed so held-out losses are comparable across seeds.
    """
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stream: list[int] = []
    # The backend tokenizer encodes whole books without the max-length warning;
    # encode_batch_fast (tokenizers >= 0.21) skips the offsets we do not need.
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    for encoding in encode(list(books), add_special_tokens=False):
        stream.extend(encoding.ids)
        stream.append(tokenizer.eos_token_id)
    n_blocks = len(stream) // recipe.seq_len
    blocks = torch.tensor(stream[: n_blocks * recipe.seq_len], dtype=torch.long)
    blocks = blocks.view(n_blocks, recipe.seq_len)
    is_heldout = torch.arange(n_blocks) % recipe.heldout_every == recipe.heldout_every - 1
    heldout = blocks[is_heldout][: recipe.heldout_blocks]
    return PretrainingData(train=blocks[~is_heldout], heldout=heldout, tokens=len(stream))


def gpt2_config(spec: CandidateSpec, recipe: ZooRecipe, eos_token_id: int):
    from transformers import GPT2Config

    config = GPT2Config(
        vocab_size=recipe.vocab_size,
        n_positions=recipe.seq_len,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        n_inner=4 * spec.n_embd,
        # No dropout: pretraining runs are short and undertrained, and a fine-tuning
        # module that wants dropout sets it explicitly.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        tie_word_embeddings=True,
    )
    # transformers 5 rejects attn_implementation= in the constructor; eager is as fast
    # as SDPA at these sizes on CPU and is what the empirical-NTK code needs.
    config._attn_implementation = "eager"
    return config


def _learning_rate_factor(step: int, total: int) -> float:
    """Linear warm-up over 5 % of the steps, then cosine decay to 10 %."""
    warmup = max(1, round(0.05 * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batch_order(n_blocks: int, n_batches: int, batch_size: int, generator) -> Iterator[Any]:
    """Indices of ``n_batches`` batches: epochs of seeded permutations, dropping tails."""
    import torch

    per_epoch = n_blocks // batch_size
    if per_epoch < 1:
        raise InputError(
            f"pretraining corpus has only {n_blocks} blocks, fewer than one batch of "
            f"{batch_size}; lower batch_size or seq_len"
        )
    produced = 0
    while produced < n_batches:
        permutation = torch.randperm(n_blocks, generator=generator)
        for start in range(0, per_epoch * batch_size, batch_size):
            if produced == n_batches:
                return
            yield permutation[start:start + batch_size]
            produced += 1


def use_fused_gelu(model: Any) -> None:
    """The blocks' ``gelu_new`` (eight elementwise passes in Python) as torch's fused
    tanh-GELU, the same function; only the module in memory changes, the saved config
    still names ``gelu_new``."""
    import torch

    for block in model.transformer.h:
        block.mlp.act = torch.nn.GELU(approximate="tanh")


def training_loss(model: Any, batch: Any) -> Any:
    """Mean next-token loss of a batch of full blocks (what ``model(labels=batch).loss``
    computes), through the fused head."""
    hidden = model.transformer(input_ids=batch, use_cache=False).last_hidden_state
    width = hidden.shape[-1]
    return linear_cross_entropy(hidden[:, :-1].reshape(-1, width), model.lm_head.weight,
                                batch[:, 1:].reshape(-1))


def _mean_loss(model, blocks, batch_size: int) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start:start + batch_size]
            # Labels are shifted inside the model: seq_len - 1 predictions per block.
            loss = model(input_ids=batch, attention_mask=torch.ones_like(batch),
                         labels=batch).loss
            total += loss.item() * len(batch)
            count += len(batch)
    return total / count


def pretrain(spec: CandidateSpec, recipe: ZooRecipe, data: PretrainingData, seed: int,
              eos_token_id: int, progress: ProgressCallback | None):
    """Pretrain one candidate from scratch; returns the model and its statistics."""
    import torch
    from transformers import GPT2LMHeadModel

    stream_seed = derive_seed(seed, "candidate", spec.name)
    # fork_rng keeps the caller's global torch RNG untouched by our seeding.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed)
        model = GPT2LMHeadModel(gpt2_config(spec, recipe, eos_token_id))
    model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's class name maps to no loss type
    use_fused_gelu(model)
    generator = torch.Generator().manual_seed(stream_seed ^ 0x5EED)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "wpe" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.learning_rate, betas=(0.9, 0.95), eps=1e-8,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step, spec.pretrain_steps))

    started = time.perf_counter()
    losses: list[float] = []
    report_every = max(1, spec.pretrain_steps // 5)
    model.train()
    batches = _batch_order(len(data.train), spec.pretrain_steps, recipe.batch_size, generator)
    for step, indices in enumerate(batches):
        batch = data.train[indices]
        loss = training_loss(model, batch)
        if not torch.isfinite(loss):
            raise InputError(
                f"pretraining {spec.name} diverged at step {step} (loss {loss.item()}); "
                f"lower its learning_rate ({spec.learning_rate})"
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % report_every == 0 and progress is not None:
            progress(f"{spec.name}: step {step + 1}/{spec.pretrain_steps}, "
                     f"loss {losses[-1]:.3f}")
    tail = losses[-max(1, len(losses) // 10):]
    heldout_loss = _mean_loss(model, data.heldout, recipe.batch_size)
    seconds = time.perf_counter() - started
    return model, {
        "final_pretrain_loss": sum(tail) / len(tail),
        "heldout_pretrain_loss": heldout_loss,
        "pretrain_seconds": seconds,
    }


def count_params(model) -> tuple[int, int]:
    """All parameters (tied head once) and those outside the embedding tables."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return total, total - embeddings
