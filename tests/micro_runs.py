"""Helpers for the tests that run ``lensllm run`` on the micro zoo in a subprocess
(test_failures.py, test_ray.py): the tiny grid config, the command line, and results
stripped of what legitimately differs between two runs of the same job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SIZES = (16, 32, 64)
# Fields that legitimately differ between two runs of the same job.
VOLATILE = ("time_s", "seconds", "threads", "rss")


def write_config(folder: Path, micro: dict[str, Any], **changes: Any) -> Path:
    """A grid search of the 3 micro candidates on sizes 16, 32, 64 (about 10 s of jobs),
    one torch thread per job so that results are bit-identical across executors."""
    import yaml

    config = {
        "name": "tiny", "seed": 0, "cache_dir": str(micro["cache"]),
        "task": {"path": str(micro["task"]), "n0": 16, "val_size": 32},
        "candidates": [{"name": n, "path": p} for n, p in micro["candidates"].items()],
        "sizes": list(SIZES), "budget": SIZES[-1], "target": 512, "search": "grid",
        "training": {"batch_size": 8, "max_length": 32, "max_epochs": 2, "patience": 1,
                     "eval_every": 2, "num_threads": 1},
        "ntk": {"enabled": True, "params": "last", "probe_size": 8},
        "executor": {"kind": "local", "workers": 1, "retries": 1},
        **changes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli_args(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lensllm", "run", str(config), "--run-dir", str(run_dir),
            "--format", "json", "--quiet", *extra]


def cli_env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LENSLLM_FAULT"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if fault:
        env["LENSLLM_FAULT"] = fault
    return env


def run_cli(config: Path, run_dir: Path, *extra: str, fault: str | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(config, run_dir, *extra), capture_output=True, text=True,
                          timeout=timeout, env=cli_env(fault))


def strip_volatile(value: Any) -> Any:
    """A result without its wall times, thread counts and memory readings."""
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items()
                if not any(w in k for w in VOLATILE)}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value
