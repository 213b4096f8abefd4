"""Mixed precision, gradient accumulation, out-of-memory recovery and the fp32 NTK probe,
on CPU with the micro zoo (a GPU check lives in benchmarks/gpu_check.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from lensllm.errors import InputError  # noqa: E402
from lensllm.hf import Candidate, TrainConfig, load_candidate, load_task, run_finetune  # noqa: E402
from lensllm.hf import train as train_module  # noqa: E402
from lensllm.hf.amp import resolve_precision  # noqa: E402

# One thread: the same bits on every machine; four steps of 8 examples.
BASE = {"batch_size": 8, "max_length": 48, "max_epochs": 1, "max_steps": 4, "eval_every": 2,
        "num_threads": 1}
# bf16 keeps 8 mantissa bits (relative round-off 2^-9 per product); summed over a
# forward pass the token losses of these models move by about 1e-4 relative.  0.2 %
# leaves room for other machines' kernels and still fails on a wrong dtype path.
BF16_RELATIVE = 2e-3
# Accumulating 4 micro-batches of 2 adds the same gradients in another order: only
# float32 round-off (observed below 1e-6 on these losses).
ACCUMULATION_ABSOLUTE = 1e-5


def exactly(text: str) -> str:
    return "^" + re.escape(text) + "$"


@pytest.fixture(scope="module")
def setup(micro: dict[str, Any]) -> tuple[Candidate, Any]:
    task = load_task(micro["task"], test_size=32, val_size=32, n0=16)
    path = sorted(micro["candidates"].values())[1]
    return Candidate("m", Path(path), learning_rate=1e-3), task


def _run(setup: tuple[Candidate, Any], **settings: Any) -> Any:
    candidate, task = setup
    return run_finetune(candidate, task, 32, config=TrainConfig(**{**BASE, **settings}),
                        device="cpu")


def _losses(result: Any) -> list[float]:
    return [result.zero_shot_test_loss, result.test_loss, result.final_test_loss,
            *(h["val_loss"] for h in result.val_history)]


@pytest.fixture(scope="module")
def fp32(setup: tuple[Candidate, Any]) -> Any:
    return _run(setup)


def test_auto_is_fp32_on_a_cpu_and_the_result_says_what_ran(fp32: Any) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert fp32.precision == "fp32" and fp32.micro_batch_size == 8 and fp32.oom_retries == []
    assert fp32.train_tokens_per_s == pytest.approx(fp32.tokens_seen / fp32.train_time_s)
    assert fp32.peak_memory_bytes is None  # a CPU has no per-run allocator statistics
    assert fp32.hyperparameters["resolved"]["precision"] == "fp32"


def test_bf16_autocast_on_cpu_matches_fp32_within_tolerance(setup, fp32) -> None:
    bf16 = _run(setup, precision="bf16")
    assert bf16.precision == "bf16"
    assert bf16.test_loss != fp32.test_loss  # it did run in another precision
    for low, full in zip(_losses(bf16), _losses(fp32), strict=True):
        assert abs(low - full) <= BF16_RELATIVE * full


def test_accumulating_4_micro_batches_of_2_equals_a_batch_of_8(setup, fp32) -> None:
    accumulated = _run(setup, micro_batch_size=2)
    assert accumulated.micro_batch_size == 2
    assert accumulated.tokens_seen == fp32.tokens_seen and accumulated.steps == fp32.steps
    for acc, full in zip(_losses(accumulated), _losses(fp32), strict=True):
        assert abs(acc - full) <= ACCUMULATION_ABSOLUTE


def test_gradient_checkpointing_changes_memory_not_results(setup, fp32) -> None:
    checkpointed = _run(setup, gradient_checkpointing=True)
    for ckpt, full in zip(_losses(checkpointed), _losses(fp32), strict=True):
        assert abs(ckpt - full) <= ACCUMULATION_ABSOLUTE


def _fail_once(monkeypatch: pytest.MonkeyPatch, target: Any, name: str,
               when: Any = lambda *a, **k: True) -> list[int]:
    """Make ``target.name`` raise torch.OutOfMemoryError the first time ``when`` holds."""
    original, calls = getattr(target, name), []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not calls and when(*args, **kwargs):
            calls.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, flaky)
    return calls


def test_out_of_memory_halves_the_micro_batch_and_carries_on(setup, fp32, monkeypatch) -> None:
    calls = _fail_once(monkeypatch, train_module._Session, "_accumulate")
    recovered = _run(setup)
    assert calls == [1]
    assert recovered.oom_retries == [{"step": 1, "stage": "train", "micro_batch_size": 4}]
    assert recovered.micro_batch_size == 4 and recovered.steps == fp32.steps
    for again, full in zip(_losses(recovered), _losses(fp32), strict=True):
        assert abs(again - full) <= ACCUMULATION_ABSOLUTE


def test_out_of_memory_in_an_evaluation_halves_its_batch(setup, fp32, monkeypatch) -> None:
    # the first evaluation forward (zero-shot test loss, eval batch 16)
    _fail_once(monkeypatch, train_module, "loss_sum",
               lambda model, batch, encoder_decoder: not model.training)
    recovered = _run(setup)
    assert recovered.oom_retries == [{"step": 0, "stage": "eval", "micro_batch_size": 8}]
    assert abs(recovered.zero_shot_test_loss - fp32.zero_shot_test_loss) <= 1e-6


def test_out_of_memory_at_micro_batch_1_fails_cleanly(setup, monkeypatch) -> None:
    def always(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(train_module._Session, "_accumulate", always)
    with pytest.raises(InputError, match=exactly(
            "out of CPU memory at training step 1 even with one example per batch; lower "
            "max_length, set gradient_checkpointing: true, use method: lora, or pick a "
            "smaller model")):
        _run(setup, micro_batch_size=2)


def test_new_settings_leave_the_identity_of_existing_configs_alone() -> None:
    before = {"batch_size": 8, "eval_batch_size": None, "max_length": 128, "max_epochs": 10,
              "max_steps": None, "eval_every": None, "patience": 3, "warmup_ratio": 0.1,
              "schedule": "linear", "weight_decay": 0.0, "max_grad_norm": 1.0}
    assert TrainConfig().identity() == before
    assert TrainConfig(micro_batch_size=2, gradient_checkpointing=True, num_threads=2,
                       precision="auto").identity() == before
    assert TrainConfig(precision="bf16").identity() == {**before, "precision": "bf16"}
    with pytest.raises(InputError, match=exactly(
            "training: 'micro_batch_size' (16) must be <= batch_size (8), the effective batch")):
        TrainConfig(micro_batch_size=16)
    with pytest.raises(InputError, match=exactly(
            "training: unknown precision 'fp8'; use one of auto, fp32, bf16, fp16")):
        TrainConfig(precision="fp8")
    with pytest.raises(InputError, match=exactly(
            "training: 'gradient_checkpointing' must be true or false")):
        TrainConfig(gradient_checkpointing="yes")


def test_the_ntk_probe_is_fp32_even_inside_autocast(setup) -> None:
    from lensllm.hf.ntk import measure_ntk

    candidate, task = setup
    model, tokenizer = load_candidate(candidate, device="cpu")
    probe = task.probe_set(tokenizer, 4, max_length=32)
    plain = measure_ntk(model, probe, params="last")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = measure_ntk(model, probe, params="last")
    assert inside.eigenvalues.tolist() == plain.eigenvalues.tolist()
    assert all(math.isfinite(v) for v in plain.eigenvalues)


def test_the_gpu_check_says_plainly_when_there_is_no_gpu() -> None:
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: run benchmarks/gpu_check.py itself")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    assert out.stderr.strip() == (
        f"gpu_check: no CUDA device is visible to torch {torch.__version__} ({build}); run it "
        "on a machine with an NVIDIA GPU and a CUDA build of torch, or pass "
        "--self-test-on-cpu to check the script itself")
