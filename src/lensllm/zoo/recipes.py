"""Zoo recipes: which GPT-2 shapes are pretrained, for how long, on which token blocks.

A recipe fixes everything about a zoo but the seed; :func:`derive_seed` turns the
seed into one random stream per candidate (and one for the task's shuffle).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from lensllm.errors import InputError
from lensllm.fileio import canonical_json

# Bump when what a recipe builds changes: every cached candidate is then rebuilt.
ZOO_FORMAT_VERSION = 1
#: the pretraining corpora a candidate can name (read by lensllm.zoo.hub); a candidate
#: that names none pretrains on the KJV alone, as the first zoos did
PRETRAIN_CORPORA = ("kjv", "web", "austen", "gcide")


@dataclass(frozen=True)
class CandidateSpec:
    """How one candidate is made: GPT-2 shape and pretraining budget.

    ``pretrain_steps`` optimizer steps of ``batch_size`` x ``seq_len`` tokens each
    (from the recipe) with AdamW, linear warm-up and cosine decay to 10 % of
    ``learning_rate``.
    """

    n_embd: int
    n_layer: int
    n_head: int
    pretrain_steps: int
    learning_rate: float = 2e-3
    #: pretraining corpora (an equal-share mixture); empty: the KJV alone
    corpus: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Readable unique name: width, depth, pretraining steps (and corpora if named)."""
        base = f"d{self.n_embd}-L{self.n_layer}-pt{self.pretrain_steps}"
        return f"{base}-{'+'.join(self.corpus)}" if self.corpus else base

    @property
    def corpora(self) -> tuple[str, ...]:
        """What it pretrains on."""
        return self.corpus or ("kjv",)

    def validate(self) -> None:
        """Raise InputError if the shape or budget is impossible."""
        if min(self.n_embd, self.n_layer, self.n_head) < 1 or self.n_embd % self.n_head:
            raise InputError(
                f"candidate {self.name}: need positive n_embd/n_layer/n_head with n_embd "
                f"divisible by n_head, got n_embd={self.n_embd}, n_head={self.n_head}"
            )
        unknown = [name for name in self.corpus if name not in PRETRAIN_CORPORA]
        if unknown or len(set(self.corpus)) != len(self.corpus):
            raise InputError(
                f"candidate {self.name}: corpus must name distinct corpora among "
                f"{', '.join(PRETRAIN_CORPORA)}, got {list(self.corpus)}"
            )
        if self.pretrain_steps < 1 or not self.learning_rate > 0:
            raise InputError(
                f"candidate {self.name}: need pretrain_steps >= 1 and learning_rate > 0, got "
                f"{self.pretrain_steps} and {self.learning_rate}"
            )


@dataclass(frozen=True)
class ZooRecipe:
    """Everything that determines a zoo besides the seed."""

    size: str
    vocab_size: int
    seq_len: int
    batch_size: int
    candidates: tuple[CandidateSpec, ...]
    heldout_every: int = 64  # every k-th pretraining block is held out for evaluation
    heldout_blocks: int = 128  # at most this many held-out blocks are evaluated
    #: each named corpus is cut to at most this many characters (see lensllm.zoo.hub)
    corpus_chars: int = 4_000_000

    @property
    def corpora(self) -> tuple[str, ...]:
        """Every corpus a candidate pretrains on, in PRETRAIN_CORPORA order (the shared
        tokenizer is trained on all of them)."""
        used = {name for spec in self.candidates for name in spec.corpora}
        return tuple(name for name in PRETRAIN_CORPORA if name in used)

    def validate(self) -> None:
        """Raise InputError if the recipe cannot be built."""
        if not self.size or any(ch in self.size for ch in "/\\ ") or self.size.startswith("."):
            raise InputError(f"recipe size {self.size!r} must be a plain name like 'demo'")
        if self.vocab_size < 300 or self.seq_len < 8 or self.batch_size < 1:
            raise InputError(
                f"recipe {self.size}: need vocab_size >= 300 (256 bytes + merges), "
                f"seq_len >= 8 and batch_size >= 1, got {self.vocab_size}, {self.seq_len}, "
                f"{self.batch_size}"
            )
        if not self.candidates:
            raise InputError(f"recipe {self.size} has no candidates")
        names = [spec.name for spec in self.candidates]
        if len(set(names)) != len(names):
            raise InputError(f"recipe {self.size} has duplicate candidates: {names}")
        if self.heldout_every < 2 or self.heldout_blocks < 1:
            raise InputError(
                f"recipe {self.size}: need heldout_every >= 2 and heldout_blocks >= 1"
            )
        for spec in self.candidates:
            spec.validate()

    @property
    def tokens_per_step(self) -> int:
        """Pretraining tokens per optimizer step."""
        return self.batch_size * self.seq_len


# The three shipped recipes.  Each pairs a small model pretrained long with larger
# models pretrained briefly, so which candidate is best depends on the fine-tuning
# data size (the README reports the measured ranking; figures are kept there, not
# here, so they cannot go stale).  "micro" is sized for tests, "demo" for the
# README's walk-through and "small" for a longer study.
RECIPES: dict[str, ZooRecipe] = {
    "micro": ZooRecipe(
        size="micro",
        vocab_size=1024,
        seq_len=64,
        batch_size=16,
        candidates=(
            CandidateSpec(n_embd=32, n_layer=1, n_head=2, pretrain_steps=240,
                          learning_rate=4e-3),
            CandidateSpec(n_embd=64, n_layer=2, n_head=2, pretrain_steps=80, learning_rate=3e-3),
            CandidateSpec(n_embd=96, n_layer=2, n_head=4, pretrain_steps=30, learning_rate=3e-3),
        ),
    ),
    "demo": ZooRecipe(
        size="demo",
        vocab_size=4096,
        seq_len=128,
        batch_size=16,
        candidates=(
            CandidateSpec(n_embd=64, n_layer=2, n_head=2, pretrain_steps=1000,
                          learning_rate=3e-3),
            CandidateSpec(n_embd=96, n_layer=3, n_head=3, pretrain_steps=300, learning_rate=2e-3),
            CandidateSpec(n_embd=128, n_layer=4, n_head=4, pretrain_steps=120,
                          learning_rate=2e-3),
            CandidateSpec(n_embd=192, n_layer=4, n_head=4, pretrain_steps=60, learning_rate=2e-3),
        ),
    ),
    "small": ZooRecipe(
        size="small",
        vocab_size=4096,
        seq_len=128,
        batch_size=16,
        candidates=(
            CandidateSpec(n_embd=64, n_layer=2, n_head=2, pretrain_steps=2400,
                          learning_rate=3e-3),
            CandidateSpec(n_embd=96, n_layer=3, n_head=3, pretrain_steps=800, learning_rate=2e-3),
            CandidateSpec(n_embd=128, n_layer=4, n_head=4, pretrain_steps=300,
                          learning_rate=2e-3),
            CandidateSpec(n_embd=192, n_layer=4, n_head=4, pretrain_steps=150,
                          learning_rate=2e-3),
            CandidateSpec(n_embd=256, n_layer=4, n_head=4, pretrain_steps=80, learning_rate=1e-3),
        ),
    ),
}


def gpt2_params(n_embd: int, n_layer: int, vocab_size: int, seq_len: int) -> int:
    """Parameters of a GPT-2 with a tied head and 4x MLP (as the zoo builds it)."""
    return vocab_size * n_embd + seq_len * n_embd + n_layer * (12 * n_embd ** 2
                                                               + 13 * n_embd) + 2 * n_embd


def compute_matched(shapes: tuple[tuple[int, int, int, tuple[str, ...]], ...], *,
                    flops: float, vocab_size: int, tokens_per_step: int, seq_len: int
                    ) -> tuple[CandidateSpec, ...]:
    """Candidates of the given ``(n_embd, n_layer, n_head, corpus)`` shapes, each
    pretrained with the same compute, ``6 x params x tokens = flops`` (so a smaller
    model sees more tokens), at learning rate ``min(3e-3, 0.4 / n_embd)``."""
    return tuple(
        CandidateSpec(n_embd=d, n_layer=layers, n_head=heads, corpus=corpus,
                      pretrain_steps=max(1, round(flops / (
                          6 * gpt2_params(d, layers, vocab_size, seq_len) * tokens_per_step))),
                      learning_rate=round(min(3e-3, 0.4 / d), 6))
        for d, layers, heads, corpus in shapes)


# The hub: nine candidates of 0.5-9 M parameters that differ as a model hub's do -- in
# width, depth and pretraining corpus (one of four, or a mixture) -- pretrained by one
# rule, equal compute, rather than tuned so that their curves cross.
HUB_SHAPES: tuple[tuple[int, int, int, tuple[str, ...]], ...] = (
    (64, 5, 2, ("gcide",)),
    (96, 2, 3, ("kjv",)),
    (128, 2, 4, ("austen",)),
    (128, 4, 4, ("web",)),
    (160, 3, 4, ("gcide",)),
    (192, 4, 4, ("kjv", "austen")),
    (256, 3, 4, ("web", "gcide")),
    (256, 6, 8, ("austen", "gcide")),
    (320, 6, 8, ("kjv", "web", "austen", "gcide")),
)
HUB_FLOPS = 1e13
# The pilot: the smallest, a middle and the largest hub shape at a twentieth of the
# compute -- for timing the fine-tuning jobs of the suite, not for its numbers.
HUB_PILOT_SHAPES = (HUB_SHAPES[0], HUB_SHAPES[5], HUB_SHAPES[8])


def _hub(size: str, shapes: tuple[tuple[int, int, int, tuple[str, ...]], ...],
         flops: float) -> ZooRecipe:
    return ZooRecipe(size=size, vocab_size=4096, seq_len=128, batch_size=16,
                     candidates=compute_matched(shapes, flops=flops, vocab_size=4096,
                                                tokens_per_step=16 * 128, seq_len=128))


RECIPES["hub"] = _hub("hub", HUB_SHAPES, HUB_FLOPS)
RECIPES["hub-pilot"] = _hub("hub-pilot", HUB_PILOT_SHAPES, HUB_FLOPS / 20)


def zoo_recipe(size: str | ZooRecipe) -> ZooRecipe:
    """The recipe named ``size`` (``"micro"``, ``"demo"``, ``"small"``), or ``size`` itself."""
    if isinstance(size, ZooRecipe):
        size.validate()
        return size
    try:
        return RECIPES[size]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown zoo size {size!r}; choose one of {', '.join(RECIPES)}"
        ) from None


def zoo_dir(cache_dir: str | os.PathLike[str], size: str | ZooRecipe = "demo",
            seed: int = 0) -> Path:
    """The folder that holds the zoo of ``size`` built with ``seed`` under ``cache_dir``."""
    return Path(cache_dir) / f"zoo-{zoo_recipe(size).size}-seed{int(seed)}"


def derive_seed(seed: int, *labels: str) -> int:
    """A 63-bit seed from the zoo seed and labels, stable across Python runs.

    Each candidate gets its own stream, so adding or reordering candidates in a
    recipe never changes the others.
    """
    digest = hashlib.sha256(canonical_json([int(seed), *labels]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1

#: the zoo sizes whose downstream tasks are the hub tasks (lensllm.zoo.hub.HUB_TASKS)
HUB_ZOO_SIZES = ("hub", "hub-pilot")
