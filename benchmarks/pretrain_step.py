"""Speed of one zoo pretraining step: the fused head + loss against the model's own loss.

For each hub shape asked for, one process, one thread (as a zoo worker runs), the same
seeded model and batches, times ``steps`` optimizer steps (after warm-up) of

* the reference: ``model(input_ids, attention_mask, labels).loss`` with the saved
  config's ``gelu_new`` (how the zoo pretrained before the fused path);
* the zoo's loop today: ``lensllm.zoo.pretrain.training_loss`` (fused head and
  cross-entropy over row chunks) with torch's tanh-GELU kernel;

and prints milliseconds per step, the ratio, and the largest loss difference seen over
the steps (rounding only: the two are the same function).

Usage: python benchmarks/pretrain_step.py [--shapes d64-L5 d128-L2 d192-L4] [--steps 20]
"""

from __future__ import annotations

import argparse
import time


def time_steps(shape: str, fused: bool, steps: int, warmup: int = 3
               ) -> tuple[float, list[float]]:
    import torch
    from transformers import GPT2LMHeadModel

    from lensllm.zoo.pretrain import gpt2_config, training_loss, use_fused_gelu
    from lensllm.zoo.recipes import RECIPES

    recipe = RECIPES["hub"]
    spec = next(s for s in recipe.candidates if s.name.startswith(shape + "-"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(spec, recipe, 0))
    model.loss_type = "ForCausalLM"
    if fused:
        use_fused_gelu(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, recipe.vocab_size, (recipe.batch_size, recipe.seq_len),
                             generator=generator) for _ in range(warmup + steps)]

    def step(batch) -> float:
        if fused:
            loss = training_loss(model, batch)
        else:
            loss = model(input_ids=batch, attention_mask=torch.ones_like(batch),
                         labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    losses = [step(batch) for batch in batches[:warmup]]
    started = time.perf_counter()
    losses += [step(batch) for batch in batches[warmup:]]
    return (time.perf_counter() - started) / steps * 1000, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["d64-L5", "d128-L2", "d192-L4"])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    print(f"{'shape':<10} {'reference ms':>13} {'fused ms':>9} {'speed-up':>9} "
          f"{'max |loss diff|':>16}")
    for shape in args.shapes:
        reference_ms, reference_losses = time_steps(shape, False, args.steps)
        fused_ms, fused_losses = time_steps(shape, True, args.steps)
        diff = max(abs(a - b) for a, b in zip(reference_losses, fused_losses, strict=True))
        print(f"{shape:<10} {reference_ms:>13.1f} {fused_ms:>9.1f} "
              f"{reference_ms / fused_ms:>8.2f}x {diff:>16.2e}")


if __name__ == "__main__":
    main()
