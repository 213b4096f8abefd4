"""Executors: where jobs (fine-tuning runs, NTK probes) run.

One interface (:class:`~lensllm.run.executors.base.Executor`), two implementations:
``local`` (in-process, or a process pool sized to the machine) and ``ray`` (optional
extra; a Ray task per job, on a local Ray or a cluster).  The scheduling -- which
candidate and size next, retries, what is already done -- stays in
:mod:`lensllm.run.pipeline`; workers only run a job and write its record.
"""

from lensllm.run.executors.base import Executor, Job, JobFailure, make_executor

__all__ = ["Executor", "Job", "JobFailure", "make_executor"]
