"""Helpers for the tests that run ``lensllm run`` on the micro zoo in a subprocess
(test_failures.py, test_ray.py): the tiny grid config, the command line, results
stripped of what legitimately differs between two runs of the same job, and the fault
injection (a job runner that fails or kills chosen jobs, and a ``lensllm`` launcher
whose executors use it)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
SIZES = (16, 32, 64)
# Fields that legitimately differ between two runs of the same job.
VOLATILE = ("time_s", "seconds", "threads", "rss", "_per_s")


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


@dataclass(frozen=True)
class FaultyRunner:
    """A job runner that breaks chosen jobs, else runs them as usual.

    ``rules``, separated by ";": ``fail:<candidate>@<size>:<n>`` raises for the job's
    first n attempts; ``crash:<candidate>@<size>:<n>`` kills the worker process instead.
    Executors pickle it to their pool and Ray workers, which import this module (keep
    this folder on their ``PYTHONPATH``: :func:`cli_env` does).
    """

    rules: str

    def __call__(self, job: Any) -> dict[str, Any]:
        from lensllm.run.jobs import run_job

        for rule in self.rules.split(";"):
            mode, _, rest = rule.partition(":")
            target, _, count = rest.rpartition(":")
            if target == f"{job.candidate}@{job.size}" and job.attempt <= int(count or 1):
                if mode == "crash":
                    os._exit(17)
                raise RuntimeError(f"injected failure (attempt {job.attempt})")
        return run_job(job)


def main_with_faults(rules: str) -> None:
    """``lensllm`` (arguments from ``sys.argv``) whose executors run every job through
    ``FaultyRunner(rules)``."""
    from lensllm import cli
    from lensllm.run import pipeline

    make_executor = pipeline.make_executor
    pipeline.make_executor = lambda settings: make_executor(
        settings, job_runner=FaultyRunner(rules))
    cli.main()


def cli_args(config: Path, run_dir: Path, *extra: str, fault: str | None = None
             ) -> list[str]:
    """The command line of ``lensllm run``; with ``fault`` (FaultyRunner rules), through
    :func:`main_with_faults`."""
    command = ["-m", "lensllm"]
    if fault:
        command = ["-c", f"import micro_runs; micro_runs.main_with_faults({fault!r})"]
    return [sys.executable, *command, "run", str(config), "--run-dir", str(run_dir),
            "--format", "json", "--quiet", *extra]


def cli_env() -> dict[str, str]:
    """Offline, with this folder importable (by the faulty launcher and its workers)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH"))
                                        if p)
    return env


def run_cli(config: Path, run_dir: Path, *extra: str, fault: str | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(config, run_dir, *extra, fault=fault), capture_output=True,
                          text=True, timeout=timeout, env=cli_env())


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc): pool workers, the local Ray a
    coordinator started, their helpers."""
    from lensllm.run.executors.watchdog import descendants as below

    return list(below(pid))


def strip_volatile(value: Any) -> Any:
    """A result without its wall times, thread counts and memory readings."""
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items()
                if not any(w in k for w in VOLATILE)}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value
