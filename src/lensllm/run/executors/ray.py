"""The Ray executor: one Ray task per job, on a local Ray or on a cluster.

Each job runs as a Ray task that reserves ``num_cpus`` CPUs and ``num_gpus`` GPUs and
calls :func:`lensllm.run.jobs.execute` inside a Ray worker process, exactly what a local
worker does.  Only the coordinator (the ``lensllm run`` process, Ray's *driver*)
writes SQLite.

Where results go:

* the payload of a finished job always travels back to the coordinator through Ray's
  object store; the coordinator stores it in SQLite;
* in addition, a worker writes the job's record (atomic JSON) into the run directory's
  ``records/`` folder **when that folder is visible on the worker's machine** (a local
  Ray, or a cluster whose nodes share the run directory's filesystem).  The record lets
  a restarted coordinator recover a job that finished while the coordinator was dead.
  On a worker that does not see the folder nothing is written there (no stray folders
  on the workers' disks) and the result only travels back: a job running when the
  coordinator dies is then redone after the restart.

A worker that dies (killed, out of memory, its node lost) comes back as a
:class:`~lensllm.run.executors.base.JobFailure`; Ray's own task retries are off
(``max_retries=0``) so that the coordinator's retry count (``executor.retries``) is the
only one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from lensllm.errors import InputError, one_line
from lensllm.run.executors.base import Job, JobFailure, JobRunner
from lensllm.run.executors.watchdog import die_with_coordinator, start_reaper, stop_reaper
from lensllm.run.jobs import execute

RAY_INSTALL = "pip install 'lensllm[ray]'"
# Environment variables forwarded to the workers when set in the coordinator (a worker on
# another machine does not inherit the coordinator's environment).
FORWARDED_ENV_PREFIXES = ("LENSLLM_",)
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_DATASETS_OFFLINE")
# A small object store is enough: payloads are a few kilobytes of JSON-able data.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
CONNECT_TIMEOUT_S = 10.0


def _threads_for(num_cpus: float) -> int:
    """Torch threads of a task that reserves ``num_cpus`` CPUs (at least one)."""
    return max(1, int(num_cpus))


def _ray_task(job: Job, threads: int, runner: JobRunner | None = None,
              coordinator: int | None = None) -> dict[str, Any] | JobFailure:
    """Body of the Ray task: pin the threads, run the job, write its record if shared.

    ``coordinator``: the PID of the driver that started this private local Ray; the
    worker ends when that process does (Ray's raylet would keep it running)."""
    if coordinator is not None:
        die_with_coordinator(coordinator, direct_parent=False)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - the finetune extra is missing on the worker
        pass
    if job.records_dir and not Path(job.records_dir).is_dir():
        # The run directory is not on this worker's filesystem: the result only travels
        # back through Ray.
        job = replace(job, records_dir="")
    return execute(job, runner)


def _machine_cpus() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _check_reachable(address: str) -> None:
    """Fail fast on a head address nothing listens on (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise InputError(
            f"executor: cannot reach the Ray cluster at {address!r} "
            f"({exc.strerror or type(exc).__name__}); start it with 'ray start --head' on the "
            "head node and give its address, or leave executor.address unset for a local Ray"
        ) from None


def _forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k.startswith(FORWARDED_ENV_PREFIXES) or k in FORWARDED_ENV}


class RayExecutor:
    """Runs each job as a Ray task with ``num_cpus`` CPUs and ``num_gpus`` GPUs.

    ``address`` connects to a running cluster (``"auto"`` on a cluster node,
    ``"ray://head:10001"`` through Ray Client, or ``"head:6379"``); ``None`` starts a
    private local Ray sized to this machine (``local_cpus`` CPUs, default all of them;
    no dashboard, warnings only, a small object store), which :meth:`close` shuts down.
    A Ray already initialised in this process (``ray.init`` called by the caller) is
    used as it is and left running.  Ray is started lazily, on the first job.

    Each task pins ``max(1, int(num_cpus))`` torch threads (``OMP_NUM_THREADS`` too);
    ``training.num_threads`` in the run config, when set, takes precedence inside the
    fine-tuning run.

    ``job_runner`` computes each job's result (default :func:`lensllm.run.jobs.run_job`);
    Ray workers receive it pickled, so it must be a module-level callable that the
    workers can import.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, local_cpus: int | None = None,
                 job_runner: JobRunner | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise InputError(f"the ray executor needs Ray, which is not installed; install "
                             f"it with: {RAY_INSTALL} (or use executor: {{kind: local}})"
                             ) from None
        if not num_cpus >= 0 or not num_gpus >= 0 or num_cpus + num_gpus <= 0:
            raise InputError("executor: a Ray task needs num_cpus > 0 or num_gpus > 0, got "
                             f"num_cpus={num_cpus}, num_gpus={num_gpus}")
        self._ray = ray
        self.address = address
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.local_cpus = local_cpus
        self.threads = _threads_for(self.num_cpus)
        self.job_runner = job_runner
        self._owns_ray = False
        self._remote: Any = None
        self._reaper: Any = None
        if address is None and not ray.is_initialized():
            cpus = local_cpus or _machine_cpus()
            if self.num_cpus > cpus:
                raise InputError(f"executor: each job asks for num_cpus={self.num_cpus:g} but "
                                 f"this machine has {cpus} CPU(s) for a local Ray; lower "
                                 "executor.num_cpus or give executor.address of a cluster")

    # ------------------------------------------------------------------ connection
    def _ensure_started(self) -> None:
        if self._remote is not None:
            return
        ray = self._ray
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
            kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                                      "namespace": "lensllm"}
            env = _forwarded_env()
            if env:
                kwargs["runtime_env"] = {"env_vars": env}
            if self.address:
                _check_reachable(self.address)
                try:
                    ray.init(address=self.address, **kwargs)
                except Exception as exc:  # ConnectionError, ValueError, RuntimeError, ...
                    raise InputError(
                        f"executor: cannot connect to the Ray cluster at {self.address!r} "
                        f"({one_line(exc)}); start it with 'ray start --head' on the head "
                        "node, or leave executor.address unset for a local Ray") from None
            else:
                cpus = self.local_cpus or _machine_cpus()
                # Ray's agents outlive a driver killed with SIGKILL: the reaper ends
                # them (see lensllm.run.executors.watchdog).
                self._reaper = start_reaper()
                try:
                    ray.init(num_cpus=cpus, include_dashboard=False,
                             object_store_memory=LOCAL_OBJECT_STORE_BYTES, **kwargs)
                except Exception as exc:
                    raise InputError(f"executor: cannot start a local Ray ({one_line(exc)})"
                                     ) from None
            self._owns_ray = True
        self._check_resources()
        self._remote = ray.remote(_ray_task)

    def _check_resources(self) -> None:
        """A task that can never be placed would wait forever: fail now instead."""
        total = self._ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
        if self.num_cpus > cpus or self.num_gpus > gpus:
            message = (f"executor: each job asks for num_cpus={self.num_cpus:g}, "
                       f"num_gpus={self.num_gpus:g} but the Ray cluster has {cpus:g} CPU(s) "
                       f"and {gpus:g} GPU(s)")
            if self.address is None:
                raise InputError(message + "; lower executor.num_cpus / num_gpus")
            # A cluster with an autoscaler may still grow: warn, do not refuse.
            sys.stderr.write(f"warning: {message}; jobs wait until nodes join\n")

    # ------------------------------------------------------------------------ jobs
    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, dict[str, Any] | JobFailure]]:
        """Submit every job as a Ray task; yield each (job, outcome) as it finishes."""
        jobs = list(jobs)
        if not jobs:
            return
        self._ensure_started()
        ray = self._ray
        for job in jobs:  # workers that share the filesystem write records here
            if job.records_dir:
                Path(job.records_dir).mkdir(parents=True, exist_ok=True)
        # Only a private Ray runs on this host for sure; a cluster ends the tasks of a
        # driver that died itself.
        watched = os.getpid() if self._owns_ray and self.address is None else None
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                   "max_retries": 0, "retry_exceptions": False}
        pending = {self._remote.options(name=f"lensllm: {job.label()}", **options)
                   .remote(job, self.threads, self.job_runner, watched): job for job in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job = pending.pop(ref)
                    yield job, self._outcome(ref)
        finally:
            for ref in pending:  # the coordinator stopped early: do not leave work behind
                with contextlib.suppress(Exception):  # already finished or gone
                    ray.cancel(ref, force=True)

    def _outcome(self, ref: Any) -> dict[str, Any] | JobFailure:
        from ray import exceptions as rex

        try:
            return self._ray.get(ref)
        except rex.RayTaskError as exc:
            # execute() turns every Exception into a JobFailure, so this is a BaseException
            # (SystemExit, KeyboardInterrupt) or an error around the call itself.
            cause = getattr(exc, "cause", None) or exc
            return JobFailure(f"the Ray task failed: {type(cause).__name__}: "
                              f"{one_line(cause)}", str(exc))
        except (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError,
                rex.ObjectLostError, rex.OwnerDiedError) as exc:
            return JobFailure(f"the Ray worker died while running the job "
                              f"({type(exc).__name__})", str(exc))
        except rex.RayError as exc:  # any other Ray-level failure of this one task
            return JobFailure(f"Ray could not run the job ({type(exc).__name__}: "
                              f"{one_line(exc)})", str(exc))

    def close(self) -> None:
        """Shut down the local Ray this executor started (a cluster keeps running)."""
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        stop_reaper(self._reaper)
        self._reaper = None
        self._owns_ray = False
        self._remote = None
