"""Fine-tuning layer: candidate models, downstream tasks, single fine-tuning runs.

Needs the ``finetune`` extra (torch, transformers, peft).  The candidate and task
modules import torch only when a model is loaded or a tensor is built, so specs and
task files can be validated without it; the training names (``run_finetune``,
``TrainConfig``, ...) import torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lensllm.hf.candidates import (
    DEFAULT_LEARNING_RATES,
    DEFAULT_LORA_TARGETS,
    METHODS,
    Candidate,
    CheckpointInfo,
    convert_gguf_checkpoint,
    load_candidate,
    smollm2_candidate,
    smollm2_gguf_path,
)
from lensllm.hf.tasks import (
    IGNORE_INDEX,
    Task,
    TaskSpec,
    TokenizedSplit,
    TokenizedTask,
    clear_tokenization_cache,
    load_task,
    tokenizer_fingerprint,
)

if TYPE_CHECKING:
    from lensllm.hf.train import Progress, RunResult, TrainConfig, run_finetune

_TRAIN_NAMES = ("Progress", "RunResult", "TrainConfig", "run_finetune")

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "DEFAULT_LORA_TARGETS",
    "IGNORE_INDEX",
    "METHODS",
    "Candidate",
    "CheckpointInfo",
    "Progress",
    "RunResult",
    "Task",
    "TaskSpec",
    "TokenizedSplit",
    "TokenizedTask",
    "TrainConfig",
    "clear_tokenization_cache",
    "convert_gguf_checkpoint",
    "load_candidate",
    "load_task",
    "run_finetune",
    "smollm2_candidate",
    "smollm2_gguf_path",
    "tokenizer_fingerprint",
]


def __getattr__(name: str) -> Any:
    # Importing torch takes seconds; only the training names need it at import time.
    if name in _TRAIN_NAMES:
        from lensllm.hf import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
