"""Shared fixtures; paths to the bundled and public benchmark data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

try:  # property tests draw the same examples on every run: a failure reproduces
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("lensllm", derandomize=True)
    _hypothesis_settings.load_profile("lensllm")
except ImportError:  # the dev extra is not installed
    pass

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCHMARK = ROOT.parent / "shared" / "benchmark"

# Nothing may reach a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_benchmark() -> Path:
    if not SHARED_BENCHMARK.is_dir():
        pytest.skip("../shared/benchmark is not beside this checkout")
    return SHARED_BENCHMARK


@pytest.fixture(scope="session")
def micro(tmp_path_factory) -> dict[str, Any]:
    """The micro zoo, built once per test session (< 1 minute), and a small task cut
    from the zoo's task: 64 test and 400 training examples."""
    pytest.importorskip("torch")
    from lensllm.zoo.build import build_task, build_zoo

    cache = tmp_path_factory.getbasetemp() / "lensllm-micro-cache"
    manifest = build_zoo(cache, "micro", 0)
    lines = build_task(cache, seed=0).read_text("utf-8").splitlines()
    test = [ln for ln in lines if json.loads(ln)["split"] == "test"][:64]
    train = [ln for ln in lines if json.loads(ln)["split"] == "train"][:400]
    task = cache / "small-task.jsonl"
    task.write_text("\n".join(test + train) + "\n", "utf-8")
    return {"cache": cache, "task": task,
            "candidates": {r.name: str(r.path) for r in manifest.candidates}}
