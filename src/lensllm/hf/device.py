"""Where fine-tuning runs and NTK probes compute: a CUDA GPU when one is visible, else CPU.

The ``device`` setting is ``auto`` (the default: a visible GPU, else the CPU), ``cpu``
or ``cuda`` (a GPU, or an error when none is visible).  Which GPUs a run may use is
what ``CUDA_VISIBLE_DEVICES`` says, as everywhere in the CUDA world.  The local
executor spreads its pool workers over the visible GPUs, one GPU per worker, by
starting each worker with ``CUDA_VISIBLE_DEVICES`` naming its GPU; Ray does the same
for a task that reserves a GPU.  Inside a job, ``auto`` therefore means "the GPU this
worker was given".  The device is not part of a run's identity: the same run on
another device is the same experiment (its numbers differ in the last digits).
"""

from __future__ import annotations

import os
from typing import Any

from lensllm.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def check_device_setting(value: Any, where: str) -> str:
    """Validate a ``device`` setting (no torch needed); returns it."""
    if value not in DEVICES:
        raise InputError(f"{where} must be auto, cpu or cuda, got {value!r} (choose GPUs "
                         "with CUDA_VISIBLE_DEVICES)")
    return value


def resolve_device(setting: str | None = None) -> Any:
    """The ``torch.device`` jobs in this process use for a setting (None = ``auto``)."""
    import torch

    setting = check_device_setting(setting or "auto", "device")
    if setting == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for, but no CUDA device is visible to "
                         "this process; use device: auto or cpu")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(setting)


def visible_gpus(setting: str = "auto") -> list[str]:
    """The GPUs (``CUDA_VISIBLE_DEVICES`` entries) that jobs may be spread over; empty
    for ``cpu``, without torch, or when torch sees no GPU."""
    if setting == "cpu":
        return []
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
              if g.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]
