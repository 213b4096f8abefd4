"""A suite folder in the layout ``lensllm suite build`` exports (run/suite.py), for the
tests of ``lensllm bench --suite``: per task ``<task>.json`` (curves at 16, 32, ...
2,048 and the target 4,096), ``<task>.runs.json`` and ``<task>.csv``, written by the
suite's own exporter, beside a ``suite.json`` with the build's keys.

The curves follow the rectified law ``B / (D_l + D^β) + E`` with per-model constants
drawn from a seeded generator, times seeded multiplicative noise of 1 %: eight
candidates whose curves cross (large knees against low floors), as a real zoo's do.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

SIZES = tuple(16 * 2**k for k in range(8))  # 16 ... 2,048
TARGET = 4096
MODELS = 8
TASKS = {"fixture-text": "text", "fixture-pairs": "pairs"}
TOKENS = {"fixture-text": 61.5, "fixture-pairs": 23.25}


def _curves(task: str, seed: int):
    from lensllm.core.curves import Curve, CurveSet

    rng = np.random.default_rng([seed, len(task)])
    curves = []
    for k in range(MODELS):
        beta = rng.uniform(0.3, 0.9)
        d_l = rng.uniform(20.0, 400.0) ** beta   # the knee, D_l = D0^β
        b = rng.uniform(2.0, 6.0) * d_l            # zero-shot loss above the floor
        e = rng.uniform(1.5, 3.0)
        sizes = np.array([*SIZES, TARGET])
        losses = b / (d_l + sizes**beta) + e
        losses = losses * np.exp(0.01 * rng.standard_normal(sizes.size))
        curves.append(Curve(f"m{k}-d{32 * (k % 4 + 1)}", sizes, losses,
                            zero_shot=float(b / d_l + e),
                            params=float(round(rng.uniform(0.5e6, 10e6)))))
    return CurveSet(curves, task=task)


def write_suite(folder: Path, seed: int = 0) -> Path:
    """The suite in ``folder`` (created); returns the folder."""
    from lensllm.run.store import Store
    from lensllm.run.suite import SUITE_FORMAT_VERSION, export_task

    folder.mkdir(parents=True, exist_ok=True)
    tasks = {}
    for task, kind in TASKS.items():
        curves = _curves(task, seed)
        store_dir = folder.parent / f"{folder.name}-runs" / task
        Store(store_dir).close()  # an empty store: the runs record lists no runs
        outcome = SimpleNamespace(exported=curves, run_dir=store_dir, ledger={
            "tokens_per_example": {m: TOKENS[task] for m in curves.models}})
        export_task(outcome, folder, task, kind)
        tasks[task] = {"kind": kind, "file": f"{task}.jsonl", "seconds": 0.0,
                       "failures": 0}
    summary = {"format_version": SUITE_FORMAT_VERSION, "zoo": "fixture", "seed": seed,
               "target": TARGET, "budgets": [TARGET // k for k in (8, 16, 32, 64)],
               "n0": SIZES[0], "tasks": tasks}
    (folder / "suite.json").write_text(json.dumps(summary, indent=1) + "\n")
    return folder
