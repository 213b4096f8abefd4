"""Executors: where jobs (fine-tuning runs, NTK probes) run.

One interface (:class:`~lensllm.run.executors.base.Executor`), two implementations:
``local`` (in-process, or a process pool sized to the machine) and ``ray`` (optional
extra; a Ray task per job, on a local Ray or a cluster).  The scheduling -- which
candidate and size next, retries, what is already done -- stays in
:mod:`lensllm.run.pipeline`; what a job computes is :mod:`lensllm.run.jobs`; workers
only run a job and write its record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lensllm.errors import InputError
from lensllm.run.executors.base import Executor, Job, JobFailure, JobRunner

if TYPE_CHECKING:
    from lensllm.run.config import ExecutorSettings

__all__ = ["Executor", "Job", "JobFailure", "JobRunner", "make_executor"]


def make_executor(settings: ExecutorSettings, job_runner: JobRunner | None = None
                  ) -> Executor:
    """An executor from :class:`lensllm.run.config.ExecutorSettings`.

    ``job_runner`` computes each job's result (default :func:`lensllm.run.jobs.run_job`).
    """
    # Imported here: the implementations import lensllm.run.jobs, which imports this
    # package's base module (importing them at the top would be a cycle at run time).
    if settings.kind == "local":
        from lensllm.hf.device import visible_gpus
        from lensllm.run.executors.local import LocalExecutor

        return LocalExecutor(workers=settings.workers, gpus=visible_gpus(settings.device),
                             job_runner=job_runner)
    if settings.kind == "ray":
        from lensllm.run.executors.ray import RayExecutor

        return RayExecutor(address=settings.address, num_cpus=settings.num_cpus,
                           num_gpus=settings.num_gpus, job_runner=job_runner)
    raise InputError(f"unknown executor {settings.kind!r}; use local or ray")
