"""Shared fixtures; paths to the bundled and public benchmark data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
