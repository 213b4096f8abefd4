"""``lensllm run CONFIG --plan``: what a run will do and cost, before it trains anything.

The plan resolves the candidates (Hub ids included) and the task exactly as a run does,
then lists every job the run can start -- the zero-shot evaluation and the NTK probe of
each candidate, and the fine-tuning runs: every size for a grid search; for the
adaptive search the warm-up rungs it always runs and, as possible jobs, every larger
size it could go on to, capped by the FLOPs budget -- with parameters, tokens and FLOPs
against fine-tuning every candidate at the target.

With measuring on (the default) each candidate gets one short fine-tuning run of a few
optimiser steps on the run's own settings and device (:func:`lensllm.hf.run_finetune`,
whose result carries the step, evaluation and loading times) and an NTK probe of two
examples; the estimates scale those to every job.  A fine-tuning job is estimated at
its step cap (``max_epochs`` / ``max_steps``): early stopping ends most runs sooner, so
the fine-tuning estimates are upper bounds.  Times are serial (one job after another);
for the local executor each total is also divided by the jobs it runs at once (its
workers, at most one per candidate), since the jobs of a rung run side by side.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lensllm.run.config import RunConfig
from lensllm.run.pipeline import example_tokens, ladder, resolve_specs
from lensllm.run.progress import RunProgress

if TYPE_CHECKING:
    from lensllm.hf import Candidate, Task, TrainConfig

#: optimiser steps of the measured run per candidate (the first carries warm-up costs)
MEASURE_STEPS = 3
#: probe examples whose per-example gradients are timed for the NTK estimate
MEASURE_PROBE = 2


@dataclass
class CandidateCost:
    """What one candidate costs: sizes and, when measured, its times on this machine."""

    name: str
    checkpoint: str
    params: int
    tokens_per_example: float
    commit: str | None = None
    #: measured: seconds per optimiser step (batch_size examples), per evaluated example,
    #: to load the model and tokenise, and per NTK probe example; None unmeasured
    step_s: float | None = None
    eval_example_s: float | None = None
    load_s: float | None = None
    ntk_example_s: float | None = None
    precision: str | None = None
    device: str | None = None


@dataclass
class PlannedJob:
    """One job: ``kind`` zero-shot, ntk or finetune; ``phase`` says whether the run
    surely starts it (``start``: zero-shot and NTK; ``first rungs`` of the adaptive
    search; ``grid``), may start it (``further rungs``) or only with --verify
    (``verify``)."""

    kind: str
    candidate: str
    size: int | None
    phase: str
    max_steps: int = 0
    max_train_tokens: int = 0
    #: 6 x params x tokens of one pass over the subset (the run's compute ledger)
    flops: float = 0.0
    est_seconds: float | None = None


@dataclass
class Plan:
    """A run's jobs and what they cost; :meth:`to_dict` / :meth:`to_text` show it."""

    config: str
    task: dict[str, Any]
    search: str
    sizes: list[int]
    target: int
    flops_budget: float
    candidates: list[CandidateCost]
    jobs: list[PlannedJob]
    reference_flops: float
    reference_seconds: float | None
    measured: bool
    measure_seconds: float = 0.0
    #: jobs the executor runs at once (local: its workers, at most one per candidate);
    #: None where it depends on a cluster (Ray)
    parallel: int | None = 1
    totals: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per optional measurement (ntk, hessian): {"measured": bool, "why": words}
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        lines = [f"plan of {self.config}: task {self.task['name']} ({self.task['train_pool']} "
                 f"training examples, test {self.task['test']}, validation "
                 f"{self.task['validation']}); sizes {', '.join(map(str, self.sizes))}; "
                 f"target {self.target}; search {self.search}"
                 + (f" (FLOPs budget {100 * self.flops_budget:g} %)"
                    if self.search == "adaptive" else "")]
        for kind, what in (("ntk", "NTK spectra"), ("hessian", "Hessian traces")):
            if kind in self.measurements:
                m = self.measurements[kind]
                lines.append(f"{what}: {'measured' if m['measured'] else 'not measured'} "
                             f"({m['why']})")
        lines.append("")
        head = f"{'candidate':<24}{'params':>12}{'tok/ex':>8}{'step s':>9}{'eval s/ex':>11}"
        lines.append(head + "  precision/device  revision")
        for c in self.candidates:
            lines.append(f"{c.name:<24}{c.params:>12,}{c.tokens_per_example:>8.1f}"
                         f"{_num(c.step_s, '.3f'):>9}{_num(c.eval_example_s, '.4f'):>11}  "
                         f"{(c.precision or '-') + '/' + (c.device or '-'):<16}  "
                         f"{(c.commit or 'local')[:12]}")
        lines.append("")
        lines.append(f"{'job':<10}{'candidate':<24}{'size':>7}{'max steps':>10}"
                     f"{'max tokens':>12}{'FLOPs':>11}{'est.':>9}  phase")
        for j in self.jobs:
            lines.append(f"{j.kind:<10}{j.candidate:<24}{_num(j.size, 'd'):>7}"
                         f"{j.max_steps or '-':>10}{j.max_train_tokens or '-':>12}"
                         f"{_num(j.flops or None, '.2e'):>11}{_duration(j.est_seconds):>9}  "
                         f"{j.phase}")
        lines.append("")
        for label, total in self.totals.items():
            line = (f"{label}: {total['jobs']} jobs, {total['flops']:.3g} FLOPs = "
                    f"{100 * total['flops'] / self.reference_flops:.2f} % of fine-tuning every "
                    f"candidate at the target, est. {_duration(total['seconds'])}")
            if self.parallel and self.parallel > 1 and total["seconds"] is not None:
                line += (f" serial, {_duration(total['seconds'] / self.parallel)} with "
                         f"{self.parallel} jobs at once")
            lines.append(line)
        lines.append(f"fine-tuning every candidate at the target: {self.reference_flops:.3g} "
                     f"FLOPs, est. {_duration(self.reference_seconds)}")
        if self.measured:
            lines.append(f"(estimates from {MEASURE_STEPS} measured steps per candidate, "
                         f"{self.measure_seconds:.0f} s; serial; fine-tuning at its step "
                         "cap, which early stopping usually undercuts)")
        else:
            lines.append("(not measured: --no-measure; drop it for time estimates)")
        return "\n".join(lines)


def make_plan(config: RunConfig, *, measure: bool = True, verify: bool = False,
              progress: RunProgress | None = None) -> Plan:
    """The plan of a run config: resolve, count, optionally measure; trains nothing
    that a run keeps and writes nothing into the run directory."""
    from lensllm.core.search import AdaptiveSettings, FlopsLedger
    from lensllm.hf import Candidate, TrainConfig, load_task
    from lensllm.hf.trainconfig import StepPlan

    progress = progress or RunProgress()
    specs, task_spec = resolve_specs(config, progress)
    candidates = {name: Candidate.from_dict(spec) for name, spec in specs.items()}
    task = load_task(**task_spec)
    training = TrainConfig.from_dict(dict(config.training))
    sizes = ladder(config, task)
    task.check_size(max(sizes))
    tokens = example_tokens(config, task, candidates, training.max_length)
    started = time.perf_counter()
    costs = []
    for name, candidate in candidates.items():
        cost = CandidateCost(name, str(candidate.path), _param_count(candidate), tokens[name],
                             commit=candidate.local_path().name if candidate.hub_id else None)
        if measure:
            progress.message(f"measuring {name} ...")
            _measure(cost, candidate, task, training, config)
        costs.append(cost)
    measure_seconds = time.perf_counter() - started

    ledger = FlopsLedger(tokens)
    params = {c.name: float(c.params) for c in costs}
    by_name = {c.name: c for c in costs}

    def finetune(name: str, size: int, phase: str) -> PlannedJob:
        step_plan = StepPlan.for_size(size, training)
        examples = min(step_plan.max_steps * training.batch_size, size * training.max_epochs)
        job = PlannedJob("finetune", name, size, phase, step_plan.max_steps,
                         round(examples * tokens[name]), ledger.cost(name, params[name], size))
        job.est_seconds = _finetune_seconds(by_name[name], task, step_plan)
        return job

    jobs = [PlannedJob("zero-shot", name, 0, "start",
                       est_seconds=_finetune_seconds(by_name[name], task, None))
            for name in candidates]
    if config.measure_ntk:
        jobs += [PlannedJob("ntk", name, None, "start",
                            est_seconds=_ntk_seconds(by_name[name], config.ntk.probe_size))
                 for name in candidates]
    warmup = AdaptiveSettings().warmup if config.search == "adaptive" else len(sizes)
    for i, size in enumerate(sizes):
        phase = "grid" if config.search == "grid" else (
            "first rungs" if i < warmup else "further rungs")
        jobs += [finetune(name, size, phase) for name in candidates]
    if verify:
        jobs += [finetune(name, config.target, "verify") for name in candidates]
    reference = ledger.reference(params, config.target)
    reference_jobs = [finetune(name, config.target, "reference") for name in candidates]
    plan = Plan(config=config.source.name,
                task={"name": task.name, "train_pool": task.pool_size, "test": task.n_test,
                      "validation": task.n_validation},
                search=config.search, sizes=sizes, target=config.target,
                flops_budget=config.flops_budget, candidates=costs, jobs=jobs,
                reference_flops=reference,
                reference_seconds=_sum_seconds(reference_jobs), measured=measure,
                measure_seconds=measure_seconds, parallel=_parallel(config, len(costs)),
                measurements={kind: dict(zip(("measured", "why"), config.measurement(kind),
                                             strict=True))
                              for kind in ("ntk", "hessian")})
    plan.totals = _totals(jobs, config, reference)
    return plan


def _totals(jobs: list[PlannedJob], config: RunConfig, reference: float
            ) -> dict[str, dict[str, Any]]:
    """First rungs (what the run surely does) and the most it could do."""
    def total(selected: list[PlannedJob]) -> dict[str, Any]:
        return {"jobs": len(selected), "flops": sum(j.flops for j in selected),
                "seconds": _sum_seconds(selected)}

    sure = total([j for j in jobs if j.phase in ("start", "first rungs", "grid")])
    label = "the grid" if config.search == "grid" else "at least (start and first rungs)"
    out = {label: sure}
    if config.search == "adaptive":
        further = [j for j in jobs if j.phase == "further rungs"]
        most = total([j for j in jobs if j.phase != "verify"])
        # The search stops before its fine-tuning passes the FLOPs budget: the further
        # rungs are charged only up to what is left of it, their time pro rata.
        cap = config.flops_budget * reference
        extra = sum(j.flops for j in further)
        allowed = min(extra, max(0.0, cap - sure["flops"]))
        most["flops"] = sure["flops"] + allowed
        if most["seconds"] is not None and sure["seconds"] is not None and extra > 0:
            most["seconds"] = sure["seconds"] + (_sum_seconds(further) or 0.0) * allowed / extra
        out["at most (within the FLOPs budget)"] = most
    if any(j.phase == "verify" for j in jobs):
        out["with --verify"] = total(jobs)  # every size, then the target, for everyone
    return out


def _parallel(config: RunConfig, candidates: int) -> int | None:
    """How many jobs the executor runs at once: the local executor's workers (default
    one per visible GPU, else one), never more than a rung's jobs; None for Ray."""
    from lensllm.hf.device import visible_gpus

    executor = config.executor
    if executor.kind != "local":
        return None
    workers = executor.workers or len(visible_gpus(executor.device)) or 1
    return max(1, min(workers, candidates))


def _sum_seconds(jobs: list[PlannedJob]) -> float | None:
    if any(j.est_seconds is None for j in jobs):
        return None
    return float(sum(j.est_seconds or 0.0 for j in jobs))


def _finetune_seconds(cost: CandidateCost, task: Task, step_plan: Any) -> float | None:
    """A fine-tuning job at its step cap (``step_plan`` None: the zero-shot job): loading,
    the zero-shot test and validation passes, the training steps, a validation pass per
    evaluation and the final test passes (final and best checkpoint)."""
    if cost.step_s is None or cost.eval_example_s is None or cost.load_s is None:
        return None
    test, val = task.n_test * cost.eval_example_s, task.n_validation * cost.eval_example_s
    seconds = cost.load_s + test + val
    if step_plan is not None and step_plan.max_steps:
        evaluations = math.ceil(step_plan.max_steps / step_plan.eval_every)
        seconds += cost.step_s * step_plan.max_steps + evaluations * val + 2 * test
    return seconds


def _ntk_seconds(cost: CandidateCost, probe_size: int) -> float | None:
    if cost.ntk_example_s is None or cost.load_s is None:
        return None
    return cost.load_s + probe_size * cost.ntk_example_s


def _param_count(candidate: Candidate) -> int:
    """Parameters of the pretrained model, from its config alone (built on the meta
    device: no weights are read or allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    info = candidate.checkpoint()
    extra = {"gguf_file": info.gguf_file} if info.gguf_file else {}
    model_config = AutoConfig.from_pretrained(
        str(info.directory), trust_remote_code=candidate.trust_remote_code, **extra)
    auto = AutoModelForSeq2SeqLM if info.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(model_config, trust_remote_code=candidate.trust_remote_code)
    return int(sum(p.numel() for p in model.parameters()))


def _measure(cost: CandidateCost, candidate: Candidate, task: Task, training: TrainConfig,
             config: RunConfig) -> None:
    """A short fine-tuning run and a two-example NTK probe, timed."""
    from lensllm.hf import load_candidate, run_finetune
    from lensllm.hf.ntk import measure_ntk
    from lensllm.hf.runtime import torch_threads

    size = min(task.pool_size, MEASURE_STEPS * training.batch_size)
    short = replace(training, max_steps=MEASURE_STEPS, eval_every=MEASURE_STEPS)
    result = run_finetune(candidate, task, size, seed=config.seed, config=short,
                          cache_dir=config.cache_dir, device=config.executor.device)
    evaluated = 2 * (task.n_test + task.n_validation)  # zero-shot and final passes
    cost.step_s = result.train_time_s / max(result.steps, 1)
    cost.eval_example_s = result.eval_time_s / evaluated
    cost.load_s = max(0.0, result.wall_time_s - result.train_time_s - result.eval_time_s)
    cost.precision, cost.device = result.precision, result.device
    if config.measure_ntk:
        ntk = config.ntk
        with torch_threads(training.num_threads):
            model, tokenizer = load_candidate(candidate, apply_method=ntk.params == "lora",
                                              device=config.executor.device)
            info = candidate.checkpoint()
            probe = task.probe_set(tokenizer, MEASURE_PROBE, max_length=training.max_length,
                                   encoder_decoder=info.is_encoder_decoder)
            measured = measure_ntk(model, probe, params=ntk.params,
                                   projection_dim=ntk.projection_dim, seed=config.seed)
        cost.ntk_example_s = measured.wall_seconds / MEASURE_PROBE


def _num(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
