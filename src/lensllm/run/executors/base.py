"""Jobs, the executor interface, and running one job inside a worker."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from lensllm.errors import InputError
from lensllm.run.store import write_record


@dataclass(frozen=True)
class Job:
    """One unit of work.  ``spec`` holds everything the worker needs (plain data)."""

    key: str
    kind: str  # "finetune" | "ntk"
    candidate: str
    size: int | None
    seed: int
    spec: dict[str, Any] = field(compare=False)
    records_dir: str = ""
    attempt: int = 1

    def label(self) -> str:
        if self.kind == "ntk":
            return f"NTK probe of {self.candidate}"
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


class Executor(Protocol):
    """Runs jobs; yields (job, result payload or JobFailure) as they finish."""

    name: str

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, dict[str, Any] | JobFailure]]:
        ...  # pragma: no cover

    def close(self) -> None:
        ...  # pragma: no cover


def make_executor(settings: Any) -> Executor:
    """An executor from :class:`lensllm.run.config.ExecutorSettings`."""
    if settings.kind == "local":
        from lensllm.hf.device import visible_gpus
        from lensllm.run.executors.local import LocalExecutor

        return LocalExecutor(workers=settings.workers, gpus=visible_gpus(settings.device))
    if settings.kind == "ray":
        from lensllm.run.executors.ray import RayExecutor

        return RayExecutor(address=settings.address, num_cpus=settings.num_cpus,
                           num_gpus=settings.num_gpus)
    raise InputError(f"unknown executor {settings.kind!r}; use local or ray")


# ---------------------------------------------------------------- inside a worker

def _fault_injection(job: Job) -> None:
    """Testing hook: LENSLLM_FAULT="fail:<candidate>@<size>:<n>" raises for the first n
    attempts; "crash:<candidate>@<size>:<n>" kills the worker process instead."""
    spec = os.environ.get("LENSLLM_FAULT")
    if not spec:
        return
    for rule in spec.split(";"):
        mode, _, rest = rule.partition(":")
        target, _, count = rest.rpartition(":")
        if target == f"{job.candidate}@{job.size}" and job.attempt <= int(count or 1):
            if mode == "crash":
                os._exit(17)
            raise RuntimeError(f"injected failure (attempt {job.attempt})")


@lru_cache(maxsize=4)
def _task(task_json: str):
    import json

    from lensllm.hf import load_task

    return load_task(**json.loads(task_json))


def _run(job: Job) -> dict[str, Any]:
    import json

    from lensllm.hf import Candidate

    spec = job.spec
    candidate = Candidate.from_dict(spec["candidate"])
    task = _task(json.dumps(spec["task"], sort_keys=True))
    if job.kind == "finetune":
        from lensllm.hf import TrainConfig, run_finetune

        config = TrainConfig.from_dict(spec["training"])
        result = run_finetune(candidate, task, int(job.size or 0), seed=job.seed,
                              config=config, cache_dir=spec.get("cache_dir"),
                              device=spec.get("device", "auto"))
        return result.to_dict()
    if job.kind == "ntk":
        import torch

        from lensllm.hf import load_candidate
        from lensllm.hf.ntk import measure_ntk

        # training.num_threads pins the measurement like the fine-tuning runs (restored
        # afterwards: the local executor runs jobs inside the coordinator).
        threads = spec["training"].get("num_threads")
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(int(threads))
        try:
            model, tokenizer = load_candidate(candidate,
                                              apply_method=spec["ntk"]["params"] == "lora",
                                              device=spec.get("device", "auto"))
            info = candidate.checkpoint()
            probe = task.probe_set(tokenizer, spec["ntk"]["probe_size"],
                                   max_length=spec["training"].get("max_length", 128),
                                   encoder_decoder=info.is_encoder_decoder)
            measured = measure_ntk(model, probe, params=spec["ntk"]["params"],
                                   projection_dim=spec["ntk"]["projection_dim"], seed=job.seed)
        finally:
            torch.set_num_threads(previous)
        return {"eigenvalues": measured.eigenvalues.tolist(),
                "projections": measured.projections.tolist(),
                "summary": {**measured.summary(),
                            "device": str(next(model.parameters()).device)}}
    if job.kind == "nlpmetrics":
        return _weight_metrics(candidate, spec.get("fits", ["PL", "E_TPL"]))
    raise InputError(f"unknown job kind {job.kind!r}")


def _weight_metrics(candidate: Any, fits: Sequence[str]) -> dict[str, Any]:
    """weightwatcher's layer-mean PL alpha and (with "E_TPL" in ``fits``) E_TPL lambda
    of the pretrained weights."""
    import io
    import logging
    import warnings
    from contextlib import redirect_stderr, redirect_stdout
    from logging import NullHandler

    from lensllm.hf import load_candidate

    # weightwatcher logs warnings while it is imported and calls logging.basicConfig:
    # silence its logger first, and give the root logger a handler for the import so
    # that basicConfig leaves this process's logging alone.
    quiet, root, guard = logging.getLogger("weightwatcher"), logging.getLogger(), NullHandler()
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    root.addHandler(guard)
    try:
        try:
            import weightwatcher
        except ImportError:
            raise InputError("the nlpmetrics baseline needs weightwatcher; install it with: "
                             "pip install 'lensllm[nlpmetrics]'") from None
        finally:
            root.removeHandler(guard)
        model, _ = load_candidate(candidate, apply_method=False)
        # powerlaw prints its progress: keep it out of the run's output (the local
        # executor runs jobs inside the coordinator, whose stdout may carry JSON).
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), \
                redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            watcher = weightwatcher.WeightWatcher(model=model)
            pl = watcher.analyze(fit="PL")
            tpl = (watcher.analyze(fit="E_TPL", pl_package="powerlaw") if "E_TPL" in fits
                   else None)
    finally:
        quiet.setLevel(level)

    def layer_mean(frame, column: str) -> float | None:
        values = [float(v) for v in frame[column] if float(v) > 0]  # -1 marks a failed fit
        return sum(values) / len(values) if values else None

    out = {"pl_alpha": layer_mean(pl, "alpha"), "layers": len(pl)}
    if tpl is not None:
        out.update(e_tpl_lambda=layer_mean(tpl, "Lambda"),
                   e_tpl_fitted_layers=int((tpl["Lambda"] > 0).sum()))
    return out


def execute(job: Job) -> dict[str, Any] | JobFailure:
    """Run a job here; on success write its record atomically and return the payload."""
    try:
        _fault_injection(job)
        result = _run(job)
    except Exception as exc:  # every failure becomes data for the coordinator
        return JobFailure.from_exception(exc, traceback.format_exc(limit=8))
    payload = {"kind": job.kind, "candidate": job.candidate, "size": job.size,
               "seed": job.seed, "result": result, "attempts": job.attempt}
    if job.records_dir:
        try:
            write_record(Path(job.records_dir), job.key, payload)
        except OSError as exc:
            # The record is only the crash-recovery copy: the payload still reaches the
            # coordinator, which stores it.
            payload["record_error"] = f"{type(exc).__name__}: {exc}"
    return payload
