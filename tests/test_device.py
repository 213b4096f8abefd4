"""Devices: the ``device`` setting, and the local executor's one-worker-per-GPU pool.

This machine has no GPU: the GPU spreading is checked through the environment each
pool worker is given (``CUDA_VISIBLE_DEVICES``), which is all the executor does; the
jobs themselves then resolve ``auto`` to that GPU (see lensllm.hf.device).
"""

from __future__ import annotations

import os
import time

import pytest

from lensllm.errors import InputError
from lensllm.hf.device import check_device_setting, resolve_device, visible_gpus
from lensllm.run.executors.local import LocalExecutor


def worker_gpu(delay: float) -> tuple[int, str | None]:
    """Runs in a pool worker: its pid and the GPU it was given."""
    time.sleep(delay)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize("value", ["auto", "cpu", "cuda"])
def test_device_settings_accepted(value):
    assert check_device_setting(value, "executor.device") == value


@pytest.mark.parametrize("value", ["gpu", "cuda:0", "", 1, None])
def test_device_settings_rejected_with_the_choices(value):
    with pytest.raises(InputError) as info:
        check_device_setting(value, "executor.device")
    assert str(info.value) == (f"executor.device must be auto, cpu or cuda, got {value!r} "
                               "(choose GPUs with CUDA_VISIBLE_DEVICES)")


def test_resolve_device_on_this_machine():
    torch = pytest.importorskip("torch")
    assert resolve_device("cpu") == torch.device("cpu")
    assert visible_gpus("cpu") == []
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        assert resolve_device("auto").type == "cuda"
        assert visible_gpus("auto")
        return
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")
    assert visible_gpus("auto") == []
    with pytest.raises(InputError) as info:
        resolve_device("cuda")
    assert str(info.value) == ("device 'cuda' was asked for, but no CUDA device is visible "
                               "to this process; use device: auto or cpu")


def test_pool_size_follows_the_gpus():
    assert LocalExecutor().workers == 1
    assert LocalExecutor(gpus=["0", "1", "2"]).workers == 3
    assert LocalExecutor(workers=2, gpus=["0", "1", "2"]).workers == 2
    assert LocalExecutor(workers=4).workers == 4


def test_each_pool_worker_gets_its_own_gpu():
    executor = LocalExecutor(workers=2, gpus=["3", "5"])
    try:
        pool = executor._ensure_pool()
        seen = [f.result(timeout=120) for f in [pool.submit(worker_gpu, 0.3) for _ in range(8)]]
    finally:
        executor.close()
    gpu_of = dict(seen)
    assert len(gpu_of) == 2, "both workers should have run jobs"
    assert sorted(gpu_of.values()) == ["3", "5"]
    assert all(gpu_of[pid] == gpu for pid, gpu in seen)  # a worker keeps its GPU


def test_more_workers_than_gpus_share_them_round_robin():
    executor = LocalExecutor(workers=3, gpus=["7"])
    try:
        pool = executor._ensure_pool()
        seen = [f.result(timeout=120) for f in [pool.submit(worker_gpu, 0.3) for _ in range(9)]]
    finally:
        executor.close()
    assert {gpu for _, gpu in seen} == {"7"}


def test_without_gpus_workers_keep_the_inherited_environment(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    executor = LocalExecutor(workers=2)
    try:
        pool = executor._ensure_pool()
        seen = [f.result(timeout=120) for f in [pool.submit(worker_gpu, 0.0) for _ in range(2)]]
    finally:
        executor.close()
    assert {gpu for _, gpu in seen} == {None}
