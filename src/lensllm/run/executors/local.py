"""The local executor: in-process for one worker, a process pool for several; with
GPUs, one pool worker per GPU."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from lensllm.run.executors.base import Job, JobFailure, JobRunner
from lensllm.run.executors.watchdog import die_with_coordinator
from lensllm.run.jobs import execute

# Each pool worker keeps a marker file ``<marker_dir>/<pid>`` holding the key of the job
# it is running.  When a worker dies the pool breaks and every unfinished job fails with
# it; the markers left behind name the job(s) that were running, so the others (still
# queued) are resubmitted without spending a retry.
_MARKER_DIR: str = ""


def _marker() -> Path:
    return Path(_MARKER_DIR) / str(os.getpid())


def _on_sigterm(signum: int, frame: Any) -> None:  # pragma: no cover - in a worker
    # The pool terminates the surviving workers when one dies: they were not at fault.
    try:
        _marker().unlink(missing_ok=True)
    finally:
        os._exit(128 + signum)


def _init_worker(threads: int, marker_dir: str = "", gpu_ids: Any = None,
                 coordinator: int | None = None) -> None:
    global _MARKER_DIR
    if coordinator is not None:
        # A worker outliving a killed coordinator would hold its memory (and GPU) for
        # a job nobody collects.
        die_with_coordinator(coordinator, direct_parent=True)
    # Several torch processes on few cores: oversubscribed threads run 5-10x slower.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpu_ids is not None:
        # This worker's GPU, set before torch initialises CUDA: inside the worker the
        # device setting "auto" then means exactly this GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids.get(timeout=60)
    _MARKER_DIR = marker_dir
    if marker_dir:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - the finetune extra is missing
        pass


def _pool_execute(job: Job, runner: JobRunner | None) -> dict[str, Any] | JobFailure:
    """Run a job in a pool worker, with a marker file while it runs."""
    if not _MARKER_DIR:
        return execute(job, runner)
    marker = _marker()
    marker.write_text(job.key)
    try:
        return execute(job, runner)
    finally:
        marker.unlink(missing_ok=True)


class LocalExecutor:
    """``workers=1`` runs jobs one after another in this process (simplest, and what
    a 2-core machine wants for tiny models); more workers use a spawn-based pool with
    ``cores // workers`` torch threads each.

    ``gpus`` (``CUDA_VISIBLE_DEVICES`` entries, see :func:`lensllm.hf.device.
    visible_gpus`): the pool's workers are spread over them, worker i on GPU i mod
    len(gpus), so that with ``workers=None`` (the default: one worker per GPU, or one
    without GPUs) every GPU runs one job at a time.

    A worker that dies (killed, out of memory) breaks the pool: the job(s) it was
    running come back as :class:`JobFailure`; jobs still queued come back as failures
    that do not count against their retries; jobs that had finished keep their results.
    The next call starts a fresh pool.

    ``job_runner`` computes each job's result (default :func:`lensllm.run.jobs.run_job`); pool
    workers receive it pickled, so it must be a module-level callable.
    """

    name = "local"

    def __init__(self, workers: int | None = None, gpus: Sequence[str] = (),
                 job_runner: JobRunner | None = None) -> None:
        self.job_runner = job_runner
        self.gpus = [str(g) for g in gpus]
        self.workers = max(1, int(workers if workers is not None else len(self.gpus) or 1))
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._pool: ProcessPoolExecutor | None = None
        self._markers: str | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            if self._markers is None:
                self._markers = tempfile.mkdtemp(prefix="lensllm-workers-")
            context = multiprocessing.get_context("spawn")
            gpu_ids = None
            if self.gpus:
                # One id per worker the pool will start; a broken pool is replaced by a
                # fresh one with a fresh queue.
                gpu_ids = context.Queue()
                for i in range(self.workers):
                    gpu_ids.put(self.gpus[i % len(self.gpus)])
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context,
                initializer=_init_worker,
                initargs=(self.threads, self._markers, gpu_ids, os.getpid()))
        return self._pool

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, dict[str, Any] | JobFailure]]:
        jobs = list(jobs)
        if self.workers == 1:
            for job in jobs:
                yield job, execute(job, self.job_runner)
            return
        pool = self._ensure_pool()
        pending: dict[Future, Job] = {pool.submit(_pool_execute, job, self.job_runner): job
                                      for job in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                yield from self._broken(pending)
                return
            for future in done:
                job = pending.pop(future)
                try:
                    yield job, future.result()
                except Exception as exc:  # the job or its result could not be pickled
                    yield job, JobFailure.from_exception(exc)

    def _broken(self, pending: dict[Future, Job]
                ) -> Iterator[tuple[Job, dict[str, Any] | JobFailure]]:
        """A worker died and the pool broke: sort every unfinished job out."""
        wait(pending)  # the pool has already failed every future it did not finish
        broken_pool, self._pool = self._pool, None
        if broken_pool is not None:
            # Wait until the pool has terminated the surviving workers (they remove their
            # markers on SIGTERM): the markers left then name the job(s) that died.
            broken_pool.shutdown(wait=True, cancel_futures=True)
        running = set()
        for marker in Path(self._markers or "").glob("*"):
            running.add(marker.read_text().strip())
            marker.unlink(missing_ok=True)
        if not running & {job.key for job in pending.values()}:
            running = set()  # no marker names an unfinished job: blame every one of them
        for future, job in pending.items():
            error = future.exception()
            if error is None:
                yield job, future.result()  # finished before the pool broke
            elif not isinstance(error, BrokenProcessPool):
                yield job, JobFailure.from_exception(error)
            elif job.key in running or not running:
                # It was running when its worker died (or no marker says which job did).
                yield job, JobFailure("the worker process died while running the job")
            else:
                yield job, JobFailure("interrupted when another job's worker died (not "
                                      "counted against its retries)", counts=False)
        pending.clear()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._markers is not None:
            shutil.rmtree(self._markers, ignore_errors=True)
            self._markers = None
