"""What each kind of job does, inside a worker.

One function per job kind (:data:`JOB_KINDS`): ``finetune`` (a fine-tuning run at one
subset size; size 0 is the zero-shot evaluation), ``ntk`` (an NTK probe of the
pretrained model) and ``nlpmetrics`` (weightwatcher's spectra of the pretrained
weights).  :func:`run_job` dispatches on ``job.kind``; :func:`execute` runs a job,
turns any exception into a :class:`~lensllm.run.executors.base.JobFailure` and writes
the job's record.  Executors call :func:`execute` with their job runner.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lensllm.errors import InputError
from lensllm.run.executors.base import Job, JobFailure, JobRunner
from lensllm.run.progress import beating, training_callback
from lensllm.run.store import write_record

if TYPE_CHECKING:
    from lensllm.hf import Candidate, Task


@lru_cache(maxsize=4)
def _task(task_json: str) -> Task:
    from lensllm.hf import load_task

    return load_task(**json.loads(task_json))


def _candidate_and_task(job: Job) -> tuple[Candidate, Task]:
    from lensllm.hf import Candidate

    candidate = Candidate.from_dict(job.spec["candidate"])
    return candidate, _task(json.dumps(job.spec["task"], sort_keys=True))


def finetune(job: Job) -> dict[str, Any]:
    """Fine-tune the candidate on ``job.size`` examples (0: zero-shot losses only)."""
    from lensllm.hf import TrainConfig, run_finetune

    candidate, task = _candidate_and_task(job)
    spec = job.spec
    config = TrainConfig.from_dict(spec["training"])
    result = run_finetune(candidate, task, int(job.size or 0), seed=job.seed, config=config,
                          cache_dir=spec.get("cache_dir"), device=spec.get("device", "auto"),
                          progress=training_callback())
    return result.to_dict()


def ntk(job: Job) -> dict[str, Any]:
    """The NTK spectrum of the pretrained candidate on a probe set of the task."""
    from lensllm.hf import load_candidate
    from lensllm.hf.ntk import measure_ntk
    from lensllm.hf.runtime import torch_threads

    candidate, task = _candidate_and_task(job)
    spec = job.spec
    # training.num_threads pins the measurement like the fine-tuning runs (restored
    # afterwards: the local executor runs jobs inside the coordinator).
    threads = spec["training"].get("num_threads")
    with torch_threads(int(threads) if threads else None):
        model, tokenizer = load_candidate(candidate,
                                          apply_method=spec["ntk"]["params"] == "lora",
                                          device=spec.get("device", "auto"))
        info = candidate.checkpoint()
        probe = task.probe_set(tokenizer, spec["ntk"]["probe_size"],
                               max_length=spec["training"].get("max_length", 128),
                               encoder_decoder=info.is_encoder_decoder)
        measured = measure_ntk(model, probe, params=spec["ntk"]["params"],
                               projection_dim=spec["ntk"]["projection_dim"], seed=job.seed)
    return {"eigenvalues": measured.eigenvalues.tolist(),
            "projections": measured.projections.tolist(),
            "summary": {**measured.summary(),
                        "device": str(next(model.parameters()).device)}}


def weight_metrics(job: Job) -> dict[str, Any]:
    """The NLPmetrics baseline's weight-spectrum metrics of the pretrained candidate."""
    from lensllm.hf import Candidate

    candidate = Candidate.from_dict(job.spec["candidate"])
    return _weight_metrics(candidate, job.spec.get("fits", ["PL", "E_TPL"]))


def _weight_metrics(candidate: Candidate, fits: Sequence[str]) -> dict[str, Any]:
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

    def layer_mean(frame: Any, column: str) -> float | None:
        values = [float(v) for v in frame[column] if float(v) > 0]  # -1 marks a failed fit
        return sum(values) / len(values) if values else None

    out = {"pl_alpha": layer_mean(pl, "alpha"), "layers": len(pl)}
    if tpl is not None:
        out.update(e_tpl_lambda=layer_mean(tpl, "Lambda"),
                   e_tpl_fitted_layers=int((tpl["Lambda"] > 0).sum()))
    return out


#: job kind -> what a worker does for it
JOB_KINDS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "finetune": finetune,
    "ntk": ntk,
    "nlpmetrics": weight_metrics,
}


def run_job(job: Job) -> dict[str, Any]:
    """The result of ``job``, computed here (the default job runner)."""
    try:
        kind = JOB_KINDS[job.kind]
    except KeyError:
        raise InputError(f"unknown job kind {job.kind!r}; use one of "
                         f"{', '.join(JOB_KINDS)}") from None
    return kind(job)


def execute(job: Job, runner: JobRunner | None = None) -> dict[str, Any] | JobFailure:
    """Run a job here with ``runner`` (default :func:`run_job`); on success write its
    record atomically and return the payload, on failure return a JobFailure."""
    try:
        # the job's heartbeat (stage, step, loss) for the coordinator's progress display
        with beating(job.records_dir, job.key, job.label()):
            result = (runner or run_job)(job)
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
