"""What an executor runs and returns: :class:`Job`, :class:`JobFailure`, and the
:class:`Executor` protocol.

What a job *does* lives in :mod:`lensllm.run.jobs`; executors only decide where it
runs, and call :func:`lensllm.run.jobs.execute` there with their job runner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from lensllm.errors import InputError


@dataclass(frozen=True)
class Job:
    """One unit of work.  ``spec`` holds everything the worker needs (plain data)."""

    key: str
    kind: str  # "finetune" | "ntk" | "nlpmetrics"
    candidate: str
    size: int | None
    seed: int
    spec: dict[str, Any] = field(compare=False)
    records_dir: str = ""
    attempt: int = 1

    def label(self) -> str:
        if self.kind == "ntk":
            return f"NTK probe of {self.candidate}"
        if self.kind == "nlpmetrics":
            return f"weight spectra of {self.candidate}"
        if self.size == 0:
            return f"zero-shot losses of {self.candidate}"
        return f"{self.candidate} @ {self.size}"


@dataclass(frozen=True)
class JobFailure:
    """A job that raised (or whose worker died); ``message`` is one line.

    ``counts=False`` marks a job that did not fail itself: another job's worker died and
    broke the pool while this one was queued or running.  The coordinator resubmits it
    without spending one of its retries.
    """

    message: str
    detail: str = ""
    counts: bool = True
    #: False for bad input (an InputError): the same job would fail again, so it is
    #: recorded as failed at once instead of spending retries
    retryable: bool = True

    @classmethod
    def from_exception(cls, exc: BaseException, detail: str = "") -> JobFailure:
        """The failure of a job that raised ``exc``: its type and first line."""
        return cls(f"{type(exc).__name__}: {exc}".splitlines()[0][:500], detail,
                   retryable=not isinstance(exc, InputError))


#: What computes a job's result inside a worker (:func:`lensllm.run.jobs.run_job`, or a
#: wrapper of it).  It travels to pool and Ray workers, so it must be picklable: a
#: module-level function, or an instance of a module-level class.
JobRunner = Callable[[Job], dict[str, Any]]


class Executor(Protocol):
    """Runs jobs; yields (job, result payload or JobFailure) as they finish."""

    name: str

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, dict[str, Any] | JobFailure]]:
        ...  # pragma: no cover

    def close(self) -> None:
        ...  # pragma: no cover
