"""Process-wide torch and transformers settings, changed only for the length of a block.

Fine-tuning runs and zoo pretraining both pin torch's CPU thread count (CPU kernels
split sums across threads, so the count changes round-off) and silence transformers'
progress bars; both give the caller its settings back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[int]:
    """Run torch CPU ops on ``count`` threads (``None``: leave the setting alone).

    Yields the thread count in force; restores the caller's count afterwards.
    """
    import torch

    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        if count is not None:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading and saving progress bars (we print nothing by default)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is part of the finetune extra
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
