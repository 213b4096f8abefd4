"""The settings of a fine-tuning run (:class:`TrainConfig`) and what they resolve to for
one subset size (:class:`StepPlan`).

Here rather than in :mod:`lensllm.hf.train` so that a run's cost can be planned
(:mod:`lensllm.run.plan`) and its settings checked without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from lensllm.errors import InputError

#: training.precision: auto (bf16 on a GPU that supports it, else fp32), or fixed
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

SCHEDULES = ("linear", "cosine", "constant")
# With eval_every unset the validation loss is measured once per epoch, but at least
# this often, so early stopping still works on large subsets.
MAX_AUTO_EVAL_INTERVAL = 200


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a fine-tuning run (the learning rate lives on the candidate).

    ``eval_batch_size=None`` uses twice ``batch_size``; ``max_steps=None`` leaves only
    the epoch cap; ``eval_every=None`` evaluates once per epoch but at least every
    :data:`MAX_AUTO_EVAL_INTERVAL` steps; ``max_grad_norm=None`` disables clipping;
    ``num_threads=None`` keeps torch's current thread count.

    ``precision``: ``auto`` (bf16 on a GPU that supports it, else fp32), ``fp32``,
    ``bf16`` or ``fp16``.  ``micro_batch_size``: examples per forward/backward pass
    (None: the whole ``batch_size``; halved on out-of-memory either way).
    ``gradient_checkpointing``: recompute activations in the backward pass instead of
    keeping them (less memory, about a third more compute).
    """

    batch_size: int = 8
    eval_batch_size: int | None = None
    max_length: int = 128
    max_epochs: int = 10
    max_steps: int | None = None
    eval_every: int | None = None
    patience: int = 3
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    num_threads: int | None = None
    precision: str = "auto"
    micro_batch_size: int | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        def positive_int(key: str, optional: bool = False) -> None:
            value = getattr(self, key)
            if value is None and optional:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"training: {key!r} must be an integer >= 1")

        for key in ("batch_size", "max_length", "max_epochs", "patience"):
            positive_int(key)
        for key in ("eval_batch_size", "max_steps", "eval_every", "num_threads",
                    "micro_batch_size"):
            positive_int(key, optional=True)
        if self.micro_batch_size is not None and self.micro_batch_size > self.batch_size:
            raise InputError(f"training: 'micro_batch_size' ({self.micro_batch_size}) must be "
                             f"<= batch_size ({self.batch_size}), the effective batch")
        if self.precision not in PRECISIONS:
            raise InputError(f"training: unknown precision {self.precision!r}; use one of "
                             f"{', '.join(PRECISIONS)}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise InputError("training: 'gradient_checkpointing' must be true or false")
        if self.max_length < 2:
            raise InputError("training: 'max_length' must be >= 2 (a token and its successor)")
        if not (_is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1):
            raise InputError("training: 'warmup_ratio' must be a number in [0, 1)")
        if self.schedule not in SCHEDULES:
            raise InputError(
                f"training: unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}"
            )
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise InputError("training: 'weight_decay' must be a number >= 0")
        if self.max_grad_norm is not None and not (
            _is_number(self.max_grad_norm) and self.max_grad_norm > 0
        ):
            raise InputError("training: 'max_grad_norm' must be a number > 0 (or unset)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a config mapping; unknown keys are an InputError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"training: unknown setting(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The settings that shape the result.

        Left out, like the device: what only perturbs round-off (the thread count, the
        micro-batch, gradient checkpointing) and ``precision: auto``, which resolves per
        machine and is recorded with each result -- so the keys of configs written
        before these settings existed stay what they were.  An explicit precision is
        part of the identity.
        """
        out = asdict(self)
        for key in ("num_threads", "micro_batch_size", "gradient_checkpointing"):
            del out[key]
        if out["precision"] == "auto":
            del out["precision"]
        return out



@dataclass(frozen=True)
class StepPlan:
    """The settings of a run resolved for its subset size."""

    steps_per_epoch: int
    max_steps: int
    eval_every: int
    warmup_steps: int
    eval_batch_size: int

    @classmethod
    def for_size(cls, size: int, config: TrainConfig) -> StepPlan:
        steps_per_epoch = math.ceil(size / config.batch_size)
        max_steps = steps_per_epoch * config.max_epochs
        if config.max_steps is not None:
            max_steps = min(max_steps, config.max_steps)
        return cls(
            steps_per_epoch=steps_per_epoch,
            max_steps=max_steps,
            eval_every=config.eval_every or max(1, min(steps_per_epoch, MAX_AUTO_EVAL_INTERVAL)),
            warmup_steps=math.ceil(config.warmup_ratio * max_steps),
            eval_batch_size=config.eval_batch_size or 2 * config.batch_size,
        )



def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
