"""The local executor: in-process for one worker, a process pool for several."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from lensllm.executors.base import Job, JobFailure, execute


def _init_worker(threads: int) -> None:
    # Several torch processes on few cores: oversubscribed threads run 5-10x slower.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - the finetune extra is missing
        pass


class LocalExecutor:
    """``workers=1`` runs jobs one after another in this process (simplest, and what
    a 2-core machine wants for tiny models); more workers use a spawn-based pool with
    ``cores // workers`` torch threads each."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.threads,))
        return self._pool

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, dict[str, Any] | JobFailure]]:
        jobs = list(jobs)
        if self.workers == 1:
            for job in jobs:
                yield job, execute(job)
            return
        pool = self._ensure_pool()
        pending: dict[Future, Job] = {pool.submit(execute, job): job for job in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    yield job, future.result()
                except BrokenProcessPool:
                    # A worker died (killed, out of memory): the pool is unusable; the
                    # coordinator retries the job on a fresh pool.
                    self._pool = None
                    yield job, JobFailure("the worker process died while running the job")
                    for other_future, other in list(pending.items()):
                        other_future.cancel()
                        yield other, JobFailure("the worker pool broke; job not finished")
                    pending.clear()
                    break

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
