"""``lensllm run``: from checkpoints and a dataset to a ranked, reported decision.

Steps (each resumable -- finished jobs live in the run directory's store):

1. resolve the candidates and the task (building the offline zoo when asked);
2. zero-shot losses (size-0 jobs) and NTK probes, one job per candidate;
3. the search: ``adaptive`` (the adaptive search over data size, the default) or
   ``grid`` (every candidate on every size up to the budget);
4. curves from the store (with NTK spectra), the selection with intervals and P(best);
5. with ``verify``: every candidate on the full grid and at the target size, and every
   method scored on this real set of candidates;
6. the curve exports (``curves.json``, ``curves.csv``) in the run directory.

:func:`run` returns a :class:`RunOutcome`; the report is written from it by
:func:`lensllm.report.run_report.write_report` (the command line does both).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lensllm.core.curves import Curve, CurveSet, NTKSpectrum
from lensllm.core.search import FlopsLedger, HalvingResult
from lensllm.core.selectors import Selection, Selector
from lensllm.errors import InputError, LensLLMError
from lensllm.run.config import RunConfig, ZooCandidates
from lensllm.run.confighash import check_config
from lensllm.run.executors import Executor, Job, JobFailure, make_executor
from lensllm.run.lock import RunLock, ensure_writable
from lensllm.run.progress import RunProgress, duration, heartbeat_dir
from lensllm.run.store import Store, job_key

if TYPE_CHECKING:  # the Hugging Face layer imports torch: only for the type checker
    from lensllm.core.evaluation import Evaluation
    from lensllm.hf import Candidate, Task


@dataclass
class RunContext:
    """Everything the steps share."""

    config: RunConfig
    store: Store
    executor: Executor
    progress: RunProgress
    candidates: dict[str, Candidate]
    #: the keyword arguments of lensllm.hf.load_task (what workers load the task from)
    task_spec: dict[str, Any]
    task: Task
    #: TrainConfig.identity() of the config's training section: part of every job key
    training: dict[str, Any]
    failures: list[dict[str, Any]] = field(default_factory=list)
    weight_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


@dataclass
class RunOutcome:
    """What a run found: everything its report and its JSON summary are made of."""

    config: RunConfig
    task: str
    #: the curves the method ranked (sizes within the budget)
    curves: CurveSet
    selection: Selection
    #: the adaptive search's rungs (None for a grid search)
    halving: HalvingResult | None
    #: the FLOPs ledger of the fine-tuning runs within the budget, against fine-tuning
    #: every candidate at the target (see :func:`flops_summary`)
    ledger: dict[str, Any]
    failures: list[dict[str, Any]]
    #: with verify: every method scored on these candidates (None if it could not be)
    verify: Evaluation | None
    #: with verify: the full curves, target-size runs included
    verified: CurveSet | None
    weight_metrics: dict[str, dict[str, float]]
    wall_seconds: float
    #: per optional measurement (ntk, hessian): whether it was made, and why
    measurements: dict[str, tuple[bool, str]] = field(default_factory=dict)
    #: with verify: methods left unscored -> why (one that reads NTK spectra, when the
    #: run measured none)
    not_scored: dict[str, str] = field(default_factory=dict)
    #: with hessian measured: per candidate, ``pretrained`` (the pretrained weights'
    #: measurement) and ``runs`` (fine-tuning size -> the run's measurement)
    hessian: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    @property
    def exported(self) -> CurveSet:
        """The curves written to curves.json / curves.csv."""
        return self.verified if self.verified is not None else self.curves


# ------------------------------------------------------------------------ set-up

def resolve_specs(config: RunConfig,
                  progress: RunProgress) -> tuple[dict[str, Any], dict[str, Any]]:
    """Candidate specs and the task spec, building the zoo when the config asks."""
    candidates = config.candidates
    task = config.task.to_dict()
    if config.zoo is not None:
        from lensllm.zoo.build import build_task, build_zoo
        from lensllm.zoo.hub import build_hub_task
        from lensllm.zoo.recipes import HUB_ZOO_SIZES

        started = time.perf_counter()
        wanted = config.zoo.candidates
        manifest = build_zoo(config.cache_dir, config.zoo.size, config.zoo.seed,
                             progress=progress.message, candidates=wanted)
        records = [r for r in manifest.candidates if wanted is None or r.name in wanted]
        progress.message(f"zoo {manifest.size}: {len(records)} candidates ready "
                         f"({duration(time.perf_counter() - started)})")
        if isinstance(candidates, ZooCandidates):
            candidates = candidates.specs((r.name, str(r.path)) for r in records)
        if task.get("path") == "zoo" and manifest.size in HUB_ZOO_SIZES:
            # The hub zoo's tasks are several: the task's name says which.
            name = task.setdefault("name", "python-docs")
            task["path"] = str(build_hub_task(config.cache_dir, name,
                                              test_examples=task.get("test_size") or 256,
                                              seed=config.zoo.seed))
        elif task.get("path") == "zoo":
            task["path"] = str(build_task(config.cache_dir, seed=config.zoo.seed))
            task.setdefault("name", "python-docs")
    task.setdefault("seed", config.seed)
    return {c.name: c.to_dict() for c in candidates}, task


def open_run(config: RunConfig, progress: RunProgress | None = None,
             executor: Executor | None = None, force: bool = False) -> RunContext:
    """Open the store (refusing a changed config unless ``force``), resolve the
    candidates and the task, ingest worker records.

    The caller holds the run directory's lock (:class:`lensllm.run.lock.RunLock`)."""
    progress = progress or RunProgress()
    ensure_writable(config.cache_dir, "cache_dir", "cache_dir in the config")
    store = Store(config.run_dir)
    try:
        return _open(config, store, progress, executor, force)
    except BaseException:
        store.close()
        raise


def _open(config: RunConfig, store: Store, progress: RunProgress, executor: Executor | None,
          force: bool) -> RunContext:
    from lensllm.hf import Candidate, TrainConfig, load_task

    # Before the zoo build and the model loads: a refusal comes at once.
    note = check_config(store, config, force)
    if note:
        progress.warn(note)
    specs, task_spec = resolve_specs(config, progress)
    candidates = {}
    for name, spec in specs.items():
        entry = {k: v for k, v in spec.items() if k != "name"}
        candidates[name] = Candidate.from_dict({"name": name, **entry})
        candidates[name].checkpoint()  # a missing or broken checkpoint fails here
    task = load_task(**task_spec)
    try:
        training = TrainConfig.from_dict(dict(config.training)).identity()
    except InputError as exc:  # name the file the bad setting is in
        raise InputError(f"{config.source.name}: {exc}") from None
    largest = max(config.sizes or [config.budget])
    task.check_size(largest)
    store.set_meta("config", config.raw)
    ingested, corrupt = store.ingest_records()
    if ingested:
        progress.message(f"recovered {ingested} finished job(s) from worker records")
    if corrupt:
        progress.warn(f"{len(corrupt)} corrupt or partial worker record(s) moved to "
                      f"{store.records_dir / 'corrupt'}; their jobs will be redone: "
                      f"{', '.join(corrupt)}")
    # Heartbeats left by a run that died: nobody runs those jobs now (we hold the lock).
    beats = heartbeat_dir(store.records_dir)
    shutil.rmtree(beats, ignore_errors=True)
    progress.watch(beats)
    store.log("start", detail={"argv": sys.argv[1:]})
    return RunContext(config=config, store=store,
                      executor=executor or make_executor(config.executor),
                      progress=progress, candidates=candidates, task_spec=task_spec,
                      task=task, training=training)


def ladder(config: RunConfig, task: Task) -> list[int]:
    """The subset sizes: the config's, else n0 x 2^k up to the budget."""
    if config.sizes:
        return list(config.sizes)
    sizes = [n for n in task.subset_sizes(config.budget) if n <= config.budget]
    if len(sizes) < 3:
        raise InputError(f"{config.source.name}: only {len(sizes)} subset size(s) n0 x 2^k fit "
                         f"under the budget {config.budget}; lower task.n0 or raise the budget")
    return sizes


# ------------------------------------------------------------------------- jobs

def _job(ctx: RunContext, kind: str, name: str, size: int | None,
         identity: dict[str, Any], **payload: Any) -> Job:
    """A job for candidate ``name``: keyed by its kind, the candidate's identity and
    ``identity`` (what determines the result); the worker gets the candidate, task,
    training settings, device and ``payload``."""
    candidate = ctx.candidates[name]
    key = job_key({"kind": kind, "candidate": candidate.identity(), **identity})
    return Job(key=key, kind=kind, candidate=name, size=size, seed=ctx.config.seed,
               spec={"candidate": candidate.to_dict(), "task": ctx.task_spec,
                     "training": dict(ctx.config.training),
                     "device": ctx.config.executor.device, **payload},
               records_dir=str(ctx.store.records_dir))


def finetune_job(ctx: RunContext, name: str, size: int) -> Job:
    identity = {"task": ctx.task.identity(), "size": int(size), "seed": ctx.config.seed,
                "training": ctx.training}
    extra: dict[str, Any] = {}
    if ctx.config.measure_hessian and size > 0:
        # Only then: a run without the measurement keeps the key it always had.
        extra["hessian"] = identity["hessian"] = ctx.config.hessian.job_settings()
    return _job(ctx, "finetune", name, int(size), identity,
                cache_dir=str(ctx.config.cache_dir), **extra)


def hessian_job(ctx: RunContext, name: str) -> Job:
    """Per-layer Hessian traces of the pretrained candidate on the task's probe set."""
    settings = ctx.config.hessian.job_settings()
    identity = {"task": ctx.task.identity(), "seed": ctx.config.seed, "hessian": settings,
                "max_length": ctx.training["max_length"]}
    return _job(ctx, "hessian", name, None, identity, hessian=settings)


def ntk_job(ctx: RunContext, name: str) -> Job:
    settings = {"params": ctx.config.ntk.params, "probe_size": ctx.config.ntk.probe_size,
                "projection_dim": ctx.config.ntk.projection_dim}
    identity = {"task": ctx.task.identity(), "seed": ctx.config.seed, "ntk": settings,
                "max_length": ctx.training["max_length"]}
    return _job(ctx, "ntk", name, None, identity, ntk=settings)


def metrics_job(ctx: RunContext, name: str, fits: Sequence[str]) -> Job:
    """weightwatcher on the pretrained weights; ``fits``: "PL" (alpha) and, when asked
    for, "E_TPL" (lambda: minutes of powerlaw fitting per model)."""
    return _job(ctx, "nlpmetrics", name, None, {"fits": list(fits)}, fits=list(fits))


def run_jobs(ctx: RunContext, jobs: Sequence[Job], what: str) -> dict[str, dict[str, Any]]:
    """Run the jobs not yet in the store (with retries); returns key -> result.

    Failed jobs (after ``executor.retries`` retries) are recorded as failed with their
    error and left out of the result; the search goes on without them.
    """
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        done = ctx.store.done(job.key)
        if done is not None:
            results[job.key] = done
        else:
            todo.append(job)
    ctx.progress.reused_jobs(what, len(jobs) - len(todo), len(jobs))
    if todo:
        with ctx.progress.stage(what, len(todo)):
            _run_todo(ctx, todo, results)
    return results


def _run_todo(ctx: RunContext, todo: list[Job], results: dict[str, dict[str, Any]]) -> None:
    retries = ctx.config.executor.retries
    while todo:
        again = []
        for job in todo:
            ctx.store.log("submit", key=job.key, detail={"label": job.label(),
                                                          "attempt": job.attempt})
        for job, outcome in ctx.executor.run(todo):
            if isinstance(outcome, JobFailure):
                if not outcome.counts:  # another job's dead worker broke the pool
                    ctx.store.log("retry", key=job.key, detail={
                        "error": outcome.message, "attempt": job.attempt, "counted": False})
                    again.append(job)
                    continue
                if job.attempt <= retries and outcome.retryable:
                    ctx.store.log("retry", key=job.key, detail={"error": outcome.message,
                                                                 "attempt": job.attempt})
                    again.append(replace(job, attempt=job.attempt + 1))
                    continue
                ctx.store.put(job.key, job.kind, job.candidate, job.size, job.seed, None,
                              error=outcome.message, attempts=job.attempt)
                ctx.failures.append({"job": job.label(), "error": outcome.message,
                                     "attempts": job.attempt})
                ctx.progress.warn(f"failed after {job.attempt} attempt(s): {job.label()}: "
                                  f"{outcome.message}")
            else:
                ctx.store.put(job.key, job.kind, job.candidate, job.size, job.seed,
                              outcome["result"], attempts=job.attempt)
                (Path(job.records_dir) / f"{job.key}.json").unlink(missing_ok=True)
                results[job.key] = outcome["result"]
            if job.records_dir:
                (heartbeat_dir(job.records_dir) / f"{job.key}.json").unlink(missing_ok=True)
            ctx.progress.job_done(job.key, job.label(), ok=job.key in results)
        todo = again


# ----------------------------------------------------------------------- curves

def _zero_shot(ctx: RunContext) -> dict[str, dict[str, Any]]:
    jobs = [finetune_job(ctx, name, 0) for name in ctx.candidates]
    results = run_jobs(ctx, jobs, "zero-shot losses")
    return {job.candidate: results[job.key] for job in jobs if job.key in results}


def _ntk(ctx: RunContext) -> dict[str, dict[str, Any]]:
    if not ctx.config.measure_ntk:
        return {}
    jobs = [ntk_job(ctx, name) for name in ctx.candidates]
    results = run_jobs(ctx, jobs, "NTK probes")
    return {job.candidate: results[job.key] for job in jobs if job.key in results}


def weight_metric_jobs(ctx: RunContext) -> list[Job]:
    """The NLPmetrics baseline's weight-spectrum jobs (none without weightwatcher):
    PL alpha, plus E_TPL lambda when the run's method ranks by it."""
    import importlib.util

    from lensllm.core.selectors import make_selector

    if importlib.util.find_spec("weightwatcher") is None:
        return []
    method = make_selector(ctx.config.method)
    fits = ["PL", "E_TPL"] if getattr(method, "metric", None) == "e_tpl_lambda" else ["PL"]
    return [metrics_job(ctx, name, fits) for name in ctx.candidates]


def record_weight_metrics(ctx: RunContext, jobs: Sequence[Job],
                          results: dict[str, dict[str, Any]]) -> None:
    for job in jobs:
        if job.key in results:
            ctx.weight_metrics[job.candidate] = {
                k: float(v) for k, v in results[job.key].items()
                if k in ("pl_alpha", "e_tpl_lambda") and v is not None}


def _finetuned(ctx: RunContext) -> dict[str, dict[int, dict[str, Any]]]:
    """Every finished fine-tuning result in the store of the current candidates/task
    (at every size the store holds, not only the ladder's: --verify adds the target)."""
    out: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in ctx.candidates}
    for name in ctx.candidates:
        keys: dict[int, str] = {}
        for row in ctx.store.jobs("finetune", "done", candidate=name):
            if not row.size:
                continue  # the zero-shot evaluation
            if row.size not in keys:
                keys[row.size] = finetune_job(ctx, name, row.size).key
            # rows of other settings (task, training, seed) share the name and size
            if row.key == keys[row.size]:
                out[name][row.size] = row.result
    return out


def build_curves(ctx: RunContext, zero: dict[str, dict[str, Any]],
                 ntk: dict[str, dict[str, Any]], up_to: int | None = None) -> CurveSet:
    """Curves of every candidate from the store: best-checkpoint test loss per size.

    NTK spectra are attached with the candidate's learning rate and, as the measured t,
    the optimiser steps of its run at the *smallest* size (the same at every budget, so
    a curve never carries information from sizes above the budget it is judged at);
    projections are divided by the probe size so F(0) is the mean squared initial
    residual, whatever the probe size.
    """
    runs = _finetuned(ctx)
    curves = []
    for name, candidate in ctx.candidates.items():
        points = {n: r for n, r in runs[name].items() if up_to is None or n <= up_to}
        if name not in zero:
            continue  # its zero-shot job failed: reported, left out
        sizes = np.array(sorted(points), dtype=np.int64)
        losses = np.array([points[n]["test_loss"] for n in sizes], dtype=float)
        spectrum = None
        if name in ntk and sizes.size:
            probe = ntk[name]["summary"].get("n_examples") or len(ntk[name]["eigenvalues"])
            spectrum = NTKSpectrum(
                np.array(ntk[name]["eigenvalues"]),
                np.array(ntk[name]["projections"]) / probe,
                candidate.effective_learning_rate,
                steps=float(points[int(sizes[0])]["steps"]),
                info=ntk[name]["summary"])
        curves.append(Curve(name, sizes, losses, zero_shot=zero[name]["zero_shot_test_loss"],
                            params=float(zero[name]["total_params"]), ntk=spectrum,
                            metrics=ctx.weight_metrics.get(name) or None))
    return CurveSet(curves, task=ctx.task.name)


def tokens_per_example(ctx: RunContext) -> dict[str, float]:
    """Mean tokens of a training example under each candidate's tokenizer (over the
    examples the largest subset uses), for the papers' FLOPs accounting."""
    return example_tokens(ctx.config, ctx.task, ctx.candidates, ctx.training["max_length"])


def example_tokens(config: RunConfig, task: Task, candidates: dict[str, Candidate],
                   max_length: int) -> dict[str, float]:
    """:func:`tokens_per_example` from its parts (``lensllm run --plan`` has no context)."""
    from transformers import AutoTokenizer

    size = min(task.pool_size, max(ladder(config, task)))
    out = {}
    for name, candidate in candidates.items():
        info = candidate.checkpoint()
        tokenizer = AutoTokenizer.from_pretrained(
            info.directory, **({"gguf_file": info.gguf_file} if info.gguf_file else {}))
        tokenized = task.tokenize(tokenizer, max_length=max_length,
                                  encoder_decoder=info.is_encoder_decoder,
                                  cache_dir=config.cache_dir)
        out[name] = float(np.mean(tokenized.train(size).lengths))
    return out


# ----------------------------------------------------------------------- search

def grid_jobs(ctx: RunContext, sizes: Sequence[int]) -> list[Job]:
    """A fine-tuning job for every candidate at every size (smallest sizes first)."""
    return [finetune_job(ctx, name, n) for n in sizes for name in ctx.candidates]


def search_grid(ctx: RunContext, sizes: Sequence[int]) -> None:
    run_jobs(ctx, grid_jobs(ctx, sizes), "fine-tuning")


def search_adaptive(ctx: RunContext, sizes: Sequence[int], zero: dict[str, dict[str, Any]],
                    ntk: dict[str, dict[str, Any]], tokens: dict[str, float]
                    ) -> HalvingResult:
    from lensllm.core.search import AdaptiveSearch, AdaptiveSettings

    stubs = [c for c in build_curves(ctx, zero, ntk, up_to=0)]

    def train(models: list[str], size: int) -> dict[str, float]:
        jobs = {name: finetune_job(ctx, name, size) for name in models}
        results = run_jobs(ctx, list(jobs.values()), f"fine-tuning at {size}")
        out = {}
        for name, job in jobs.items():
            # a run that failed for good counts as hopeless for the search
            out[name] = results[job.key]["test_loss"] if job.key in results else math.inf
        return out

    settings = AdaptiveSettings(flops_fraction=ctx.config.flops_budget)
    halving = AdaptiveSearch(ctx.config.method, settings)
    return halving.run(train, stubs, list(sizes), ctx.config.target, tokens,
                       task=ctx.task.name)


# ---------------------------------------------------------------------- the run

def run(config: RunConfig, *, verify: bool = False, progress: RunProgress | None = None,
        executor: Executor | None = None, force: bool = False, wait: bool = False,
        locked: bool = False) -> RunOutcome:
    """Execute a run config end to end (resuming whatever the run directory holds).

    Writes the store and the curve exports into the run directory; the report is
    written from the returned outcome (:func:`lensllm.report.run_report.write_report`).
    The run holds the run directory's lock throughout: another run on it is refused
    (or, with ``wait``, waits); ``locked``: the caller holds it already (the command
    line, until the report is written too).  A config other than the one the run
    directory holds is refused unless ``force``.
    """
    progress = progress or RunProgress()
    if locked:
        return _run(config, verify, progress, executor, force)
    with RunLock(config.run_dir, wait=wait, notify=progress.message):
        return _run(config, verify, progress, executor, force)


def _run(config: RunConfig, verify: bool, progress: RunProgress, executor: Executor | None,
         force: bool) -> RunOutcome:
    from lensllm.core.selectors import make_selector

    started = time.perf_counter()
    ctx = open_run(config, progress, executor, force)
    ctx.started = started  # the wall time includes loading the models and the task
    try:
        sizes = ladder(config, ctx.task)
        zero = _zero_shot(ctx)
        if not zero:
            first = ctx.failures[0] if ctx.failures else None
            raise InputError("every candidate failed its zero-shot evaluation"
                             + (f"; first failure: {first['job']}: {first['error']}"
                                if first else "; see the failures in the run directory's "
                                "store"))
        ntk = _ntk(ctx)
        pretrained_hessian: dict[str, dict[str, Any]] = {}
        if config.measure_hessian:
            jobs = [hessian_job(ctx, name) for name in ctx.candidates]
            done = run_jobs(ctx, jobs, "Hessian traces")
            pretrained_hessian = {j.candidate: done[j.key] for j in jobs if j.key in done}
        selector = make_selector(config.method)
        if selector.name == "nlpmetrics":
            # Only this method needs them before ranking; --verify measures them for
            # scoring alongside its fine-tuning runs.
            jobs = weight_metric_jobs(ctx)
            record_weight_metrics(ctx, jobs, run_jobs(ctx, jobs, "weight-spectrum metrics"))
        tokens = tokens_per_example(ctx)
        halving = None
        if config.search == "grid":
            search_grid(ctx, sizes)
        else:
            halving = search_adaptive(ctx, sizes, zero, ntk, tokens)
        # Sizes within the budget only: a resumed --verify run has target-size runs too.
        measured = build_curves(ctx, zero, ntk, up_to=config.budget)
        curves, budget = rankable(ctx, measured, selector)
        selection = selector.select(curves, budget, config.target, uncertainty=True)
        actual = sum(r["train_flops"] for runs in _finetuned(ctx).values()
                     for n, r in runs.items() if n <= config.budget)
        ledger = flops_summary(measured, tokens, config.target, actual, zero=zero,
                               ntk=ntk if config.measure_ntk else None)

        verification, verified, not_scored = None, None, {}
        if verify:
            verification, verified, not_scored = run_verify(ctx, sizes, zero, ntk)
            runs = _finetuned(ctx)
            ledger["verify_train_flops"] = sum(r["train_flops"] for by_size in runs.values()
                                               for n, r in by_size.items()
                                               if n > config.budget)
            at_target = [by_size[config.target]["train_flops"] for by_size in runs.values()
                         if config.target in by_size]
            # the measured reference only when every candidate has its target run
            ledger["target_train_flops"] = (sum(at_target) if len(at_target) == len(runs)
                                            else None)
        outcome = RunOutcome(config=config, task=ctx.task.name, curves=curves,
                             selection=selection, halving=halving, ledger=ledger,
                             failures=ctx.failures, verify=verification, verified=verified,
                             weight_metrics=ctx.weight_metrics,
                             wall_seconds=time.perf_counter() - ctx.started,
                             measurements={k: config.measurement(k)
                                           for k in ("ntk", "hessian")},
                             not_scored=not_scored,
                             hessian=hessian_results(ctx, pretrained_hessian))
        export_curves(outcome.exported, outcome.run_dir)
        ctx.progress.message(f"finished in {duration(outcome.wall_seconds)}: "
                             f"{ctx.progress.summary()}")
        ctx.store.log("finish", detail={"chosen": selection.chosen,
                                        "wall_s": outcome.wall_seconds})
        return outcome
    finally:
        ctx.executor.close()
        ctx.store.close()


def flops_summary(curves: CurveSet, tokens: dict[str, float], target: int,
                  actual_train_flops: float, zero: dict[str, dict[str, Any]] | None = None,
                  ntk: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The compute ledger of the runs behind ``curves``: each size of each curve charged
    6 x params x tokens, against fine-tuning every candidate once at the target; with
    the zero-shot and NTK results, their FLOPs too (the NTK probes' as an upper
    estimate, 6 x params x tokens per probe example: they record no FLOPs count)."""
    ledger = FlopsLedger(tokens)
    params = {c.model: float(c.params) for c in curves}
    for curve in curves:
        for n in curve.sizes:
            ledger.charge(curve.model, params[curve.model], int(n))
    spent, reference = ledger.total, ledger.reference(params, target)
    out = {"spent_flops": spent, "reference_flops": reference,
           "fraction": spent / reference, "saved_percent": 100 * (1 - spent / reference),
           "actual_train_flops": actual_train_flops, "tokens_per_example": tokens,
           "runs": len(ledger.entries)}
    if zero is not None:
        out["zero_shot_flops"] = float(sum(r.get("eval_flops") or 0 for r in zero.values()))
    if ntk is not None:
        out["ntk_flops"] = float(sum(
            ledger.cost(name, params[name], int(r["summary"].get("n_examples") or 0))
            for name, r in ntk.items() if name in params))
    return out


def export_curves(curves: CurveSet, run_dir: Path) -> None:
    """curves.json and curves.csv (wide) in the run directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "curves.json").write_text(json.dumps(curves.to_json(), indent=1))
    (run_dir / "curves.csv").write_text(curves.to_wide_csv())


def rankable(ctx: RunContext, curves: CurveSet, selector: Selector) -> tuple[CurveSet, int]:
    """The curves the method can rank, and the budget (largest size finished).

    A candidate left with fewer finished sizes than the method needs (its fine-tuning
    jobs failed for good) is left out of the ranking and listed with the failures,
    instead of stopping the whole run.
    """
    sized = [c for c in curves if len(c)]
    if not sized:
        raise InputError("no fine-tuning run finished for any candidate; see the failures "
                         "in the run directory's store")
    budget = int(max(c.sizes.max() for c in sized))
    keep = []
    for curve in curves:
        finished = curve.within(budget).sizes
        if len(finished) >= selector.required_sizes:
            keep.append(curve)
            continue
        note = (f"left out of the ranking: {len(finished)} fine-tuning size(s) finished "
                f"({', '.join(str(int(n)) for n in finished) or 'none'}); the {selector.name} "
                f"method needs {selector.required_sizes}")
        ctx.failures.append({"job": f"{curve.model} (ranking)", "error": note, "attempts": 0})
        ctx.progress.warn(f"{curve.model}: {note}")
    if not keep:
        raise InputError(f"no candidate has the {selector.required_sizes} finished fine-tuning "
                         f"sizes the {selector.name} method needs; see the failures above")
    return CurveSet(keep, task=curves.task), budget


def hessian_results(ctx: RunContext, pretrained: dict[str, dict[str, Any]]
                    ) -> dict[str, dict[str, Any]]:
    """Per candidate with Hessian measurements: the pretrained weights' and, by size,
    each fine-tuning run's (sizes above the budget too, after --verify)."""
    runs = _finetuned(ctx)
    out: dict[str, dict[str, Any]] = {}
    for name in ctx.candidates:
        measured = {n: r["hessian"] for n, r in runs.get(name, {}).items()
                    if n > 0 and r.get("hessian")}
        if measured or name in pretrained:
            out[name] = {"pretrained": pretrained.get(name), "runs": measured}
    return out


def run_verify(ctx: RunContext, sizes: Sequence[int], zero: dict[str, dict[str, Any]],
               ntk: dict[str, dict[str, Any]]
               ) -> tuple[Evaluation | None, CurveSet, dict[str, str]]:
    """Fine-tune every candidate on the full grid and at the target; score every method.

    Returns the scores (None when they cannot be computed), the full curves and the
    methods left unscored, with why."""
    from lensllm.core.evaluation import evaluate
    from lensllm.core.selectors import SELECTORS

    config = ctx.config
    ctx.task.check_size(config.target)
    # The weight-spectrum jobs share the batch with the (long) target-size runs, so a
    # pool worker that would idle at the end measures them.
    jobs = grid_jobs(ctx, [*sizes, config.target])
    metric_jobs = weight_metric_jobs(ctx)
    record_weight_metrics(ctx, metric_jobs,
                          run_jobs(ctx, jobs + metric_jobs, "verification runs"))
    curves = build_curves(ctx, zero, ntk)
    budgets = [n for n in sizes if sum(1 for m in sizes if m <= n) >= 3]
    usable = {"model-size": all(c.params for c in curves),
              "nlpmetrics": all((c.metrics or {}).get("pl_alpha") is not None
                                for c in curves)}
    not_scored = {}
    if not any(c.ntk is not None for c in curves):
        # Without a spectrum such a method falls back to another's fit (lensllm-paper:
        # the rectified law); scoring it would show that method's numbers under its name.
        why = ctx.config.measurement("ntk")[1]
        not_scored = {m: f"reads NTK spectra; none was measured ({why})"
                      for m, cls in SELECTORS.items() if cls.uses_ntk}
    methods = [m for m in SELECTORS if usable.get(m, True) and m not in not_scored]
    try:
        table = evaluate(curves, methods=methods, budgets=budgets, target=config.target)
    except LensLLMError as exc:
        ctx.progress.message(f"verify: could not score the methods: {exc}")
        table = None
    return table, curves, not_scored


def summary_json(outcome: RunOutcome, report: Path | None = None) -> dict[str, Any]:
    """The run's result as JSON-able data (``lensllm run --format json``); ``report``:
    the report's path, if one was written."""
    sel = outcome.selection
    return {
        "run_dir": str(outcome.run_dir), "chosen": sel.chosen, "method": sel.method,
        "budget": sel.budget, "target": sel.target, "ranking": sel.to_records(),
        "ledger": {k: v for k, v in outcome.ledger.items() if k != "tokens_per_example"},
        "failures": outcome.failures, "wall_seconds": outcome.wall_seconds,
        "report": None if report is None else str(report),
        "verify": None if outcome.verify is None else outcome.verify.to_records(),
        "not_scored": outcome.not_scored,
        "measured": {kind: {"measured": made, "why": why}
                     for kind, (made, why) in outcome.measurements.items()},
    }

