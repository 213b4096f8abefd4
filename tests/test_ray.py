"""The Ray executor: its contract, and the micro zoo giving the same results as local.

The equivalence test runs the same grid search of the 3 micro candidates through the
real CLI twice -- ``executor: local`` (one in-process worker) and ``executor: ray`` (a
local Ray sized to the machine, one CPU and one torch thread per task) -- and compares
every stored job result (minus wall times, thread counts and memory readings) and the
ranking.  ``training.num_threads: 1`` makes the local run use one thread too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lensllm.errors import InputError
from lensllm.run.config import ExecutorSettings
from lensllm.run.executors import Job, JobFailure, make_executor
from micro_runs import TESTS, FaultyRunner, run_cli, strip_volatile, write_config

CANDIDATES = ("d32-L1-pt240", "d64-L2-pt80", "d96-L2-pt30")


def _job(candidate: str, size: int = 1, records_dir: str = "") -> Job:
    return Job(key=f"key-{candidate}", kind="finetune", candidate=candidate, size=size, seed=0,
               spec={}, records_dir=records_dir)


# ------------------------------------------------------------------ contract, no torch

def test_missing_ray_is_an_input_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    with pytest.raises(InputError) as info:
        make_executor(ExecutorSettings(kind="ray"))
    assert str(info.value) == ("the ray executor needs Ray, which is not installed; install "
                               "it with: pip install 'lensllm[ray]' (or use executor: "
                               "{kind: local})")


def test_local_ray_refuses_tasks_larger_than_the_machine():
    pytest.importorskip("ray")
    from lensllm.run.executors.ray import RayExecutor

    with pytest.raises(InputError) as info:
        RayExecutor(num_cpus=64, local_cpus=2)
    assert str(info.value) == ("executor: each job asks for num_cpus=64 but this machine has 2 "
                               "CPU(s) for a local Ray; lower executor.num_cpus or give "
                               "executor.address of a cluster")


def test_unreachable_cluster_fails_fast():
    pytest.importorskip("ray")
    from lensllm.run.executors.ray import RayExecutor

    executor = RayExecutor(address="127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(InputError, match=r"^executor: cannot reach the Ray cluster at "
                                         r"'127\.0\.0\.1:1' \(Connection refused\)"):
        list(executor.run([_job("a")]))
    assert time.monotonic() - started < 15


def test_task_writes_records_only_where_the_run_dir_is_visible(monkeypatch, tmp_path):
    """A worker that does not see the run directory writes no record (and creates no
    folder); the result travels back through Ray only."""
    pytest.importorskip("ray")
    from lensllm.run.executors import ray as ray_executor

    seen: list[Job] = []
    monkeypatch.setattr(ray_executor, "execute",
                        lambda job, runner=None: seen.append(job) or {})
    monkeypatch.setitem(sys.modules, "torch", None)  # keep this process's torch threads
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # restored after the test
        monkeypatch.setenv(name, os.environ.get(name, "0"))
    elsewhere = tmp_path / "not-on-this-node" / "records"
    ray_executor._ray_task(_job("a", records_dir=str(elsewhere)), threads=1)
    assert seen[-1].records_dir == "" and not elsewhere.parent.exists()
    shared = tmp_path / "records"
    shared.mkdir()
    ray_executor._ray_task(_job("a", records_dir=str(shared)), threads=1)
    assert seen[-1].records_dir == str(shared)
    assert os.environ["OMP_NUM_THREADS"] == "1"


@pytest.mark.slow  # ~10 s of Ray start-up; test_failures.py covers this through the CLI
def test_dead_ray_worker_and_failing_job_come_back_as_failures(monkeypatch):
    """A worker killed mid-task (os._exit) and a job that raises both come back as
    JobFailure, not as exceptions; a good job elsewhere in the batch is unaffected."""
    pytest.importorskip("ray")
    from lensllm.run.executors.ray import RayExecutor

    # the Ray workers import the runner's module (micro_runs) from their PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
    executor = RayExecutor(num_cpus=1,
                           job_runner=FaultyRunner("crash:dies@1:1;fail:raises@1:1"))
    try:
        outcomes = {job.candidate: out for job, out in executor.run(
            [_job("dies"), _job("raises"), _job("other")])}
    finally:
        executor.close()
    assert set(outcomes) == {"dies", "raises", "other"}
    assert outcomes["dies"] == JobFailure(
        "the Ray worker died while running the job (WorkerCrashedError)",
        outcomes["dies"].detail)
    assert outcomes["raises"].message == "RuntimeError: injected failure (attempt 1)"
    # "other" ran: with no spec it fails inside execute, as data
    assert isinstance(outcomes["other"], JobFailure)
    assert outcomes["other"].message == "KeyError: 'candidate'"


# ------------------------------------------------------------- equivalence with local

def _run(config: Path, run_dir: Path) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    out = run_cli(config, run_dir, timeout=1200)
    wall = time.perf_counter() - started
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout), wall


def _results(run_dir: Path) -> dict[str, Any]:
    from lensllm.run.store import Store

    with Store(run_dir, invocation="reader") as store:
        return {r.key: (r.kind, r.candidate, r.size, r.status, r.attempts, strip_volatile(r.result))
                for r in store.jobs()}


def _check_equivalent(tmp_path: Path, micro: dict[str, Any], **changes: Any) -> None:
    local, local_wall = _run(write_config(tmp_path / "local", micro,
                                     executor={"kind": "local", "workers": 1}, **changes),
                             tmp_path / "local" / "run")
    ray, ray_wall = _run(write_config(tmp_path / "ray", micro,
                                 executor={"kind": "ray", "num_cpus": 1}, **changes),
                         tmp_path / "ray" / "run")
    a, b = _results(tmp_path / "local" / "run"), _results(tmp_path / "ray" / "run")
    assert len(a) > 0 and set(a) == set(b)
    for key in a:
        assert a[key] == b[key], a[key][:3]
    assert all(row[3] == "done" for row in a.values())
    assert ray["ranking"] == local["ranking"] and ray["chosen"] == local["chosen"]
    assert {r["model"] for r in local["ranking"]} == set(CANDIDATES)
    sys.stderr.write(f"\nwall time local {local_wall:.1f} s (pipeline {local['wall_seconds']:.1f}"
                     f" s), ray {ray_wall:.1f} s (pipeline {ray['wall_seconds']:.1f} s): "
                     f"ray/local = {ray_wall / local_wall:.2f}\n")


@pytest.mark.torch
def test_ray_gives_exactly_the_local_results(micro, tmp_path):
    pytest.importorskip("ray")
    _check_equivalent(tmp_path, micro)


@pytest.mark.torch
@pytest.mark.slow
def test_ray_gives_exactly_the_local_results_on_the_micro_example(micro, tmp_path):
    """The full examples/micro.yaml settings (4 sizes, 4 epochs, 256 test examples)."""
    pytest.importorskip("ray")
    import yaml

    root = Path(__file__).resolve().parents[1]
    example = yaml.safe_load((root / "examples" / "micro.yaml").read_text())
    example["training"]["num_threads"] = 1
    _check_equivalent(tmp_path, micro, task={"path": "zoo", "n0": 16, "val_size": 64},
                      candidates="zoo", zoo={"size": "micro"}, sizes=None,
                      budget=example["budget"], target=example["target"],
                      training=example["training"], ntk=example["ntk"])
