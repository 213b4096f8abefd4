"""A small synthetic suite folder laid out as ``lensllm suite build`` exports it
(``suite.json``, ``<task>.json`` curves with NTK spectra, ``<task>.runs.json`` with the
runs' FLOPs, steps and Hessian measurements, keyed as ``run/suite.py`` and
``hf/train.py`` write them), for the study script's tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
TARGET = 4096
BUDGETS = [512, 256, 128, 64]
LAYERS = ["transformer.h.0", "transformer.h.1", "other"]
N_PARAMS = {"transformer.h.0": 50_000, "transformer.h.1": 50_000, "other": 200_000}


def _hessian(rng: np.random.Generator, trace: float, distances: dict[str, float] | None,
             **extra: Any) -> dict[str, Any]:
    """A measurement in HessianMeasurement.to_dict()'s layout."""
    shares = {"transformer.h.0": 0.3, "transformer.h.1": 0.5, "other": 0.2}
    per_layer = {layer: trace * share * float(np.exp(0.05 * rng.standard_normal()))
                 for layer, share in shares.items()}
    return {"layers": list(LAYERS), "n_params": dict(N_PARAMS), "trace": per_layer,
            "trace_stderr": {layer: 0.05 * v for layer, v in per_layer.items()},
            "samples": 4, "probe_size": 16, "seed": 0, "loss": 3.0, "seconds": 1.5,
            "peak_rss_bytes": 300_000_000, "distance": distances,
            "distance_total": None if distances is None else sum(distances.values()),
            "extra": {}, "total_trace": sum(per_layer.values()), **extra}


def write_study_suite(folder: Path, seed: int = 0) -> Path:
    """Two tasks x five models following rectified laws whose pre-learned size D0 the
    NTK's F tracks; Hessian traces that fall past each curve's knee.  Oddities the study
    must report rather than trip on: ``pairs`` lacks the Hessian of one run and has a
    negative layer distance in another."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tasks = {"prose": "causal", "pairs": "pairs"}
    for t, task in enumerate(tasks):
        curves, runs, pretrained, tokens = [], {}, {}, {}
        for m in range(5):
            name = f"m{m}"
            d0, beta, e = 20.0 * 3.2 ** m, 0.8 + 0.05 * t, 0.5 - 0.05 * m
            d_l = d0 ** beta
            b = (3.0 + 0.2 * m) * d_l  # the zero-shot loss is b / d_l + e
            losses = {n: (b / (d_l + n ** beta) + e) * float(np.exp(0.004 * rng.standard_normal()))
                      for n in SIZES}
            lam = np.geomspace(1e-2, 10.0, 6) * (1.0 + 0.1 * m)
            proj = np.full(6, d_l / 6.0) * float(np.exp(0.1 * rng.standard_normal()))
            ntk = {"eigenvalues": lam.tolist(), "projections": proj.tolist(),
                   "learning_rate": 1e-4, "steps": 12.0 + m,
                   "info": {"n_examples": 16, "params": "last"}}
            curves.append({"model": name, "points": [[n, losses[n]] for n in SIZES],
                           "zero_shot": b / d_l + e, "params": 1e6 * (1 + m),
                           "family": "gpt2", "ntk": ntk})
            tokens[name] = 40.0
            pretrained[name] = _hessian(rng, 50.0 * (1 + m), None)
            per_size: dict[str, Any] = {"0": {"train_flops": 0.0, "steps": 0,
                                              "wall_time_s": 0.5, "tokens_seen": 0,
                                              "test_loss": b / d_l + e}}
            for n in SIZES:
                test = losses[n]
                # the trace falls as the curve passes its pre-learned size
                trace = 50.0 * (1 + m) / (1.0 + (n / d0) ** 0.7)
                distances = {layer: 0.02 * share * np.log(n) ** 2
                             for layer, share in zip(LAYERS, (1.0, 1.5, 0.5), strict=True)}
                gap = 0.8 / np.sqrt(n) * (1.0 + 0.02 * rng.standard_normal())
                entry: dict[str, Any] = {"train_flops": 6e6 * n * (1 + m), "steps": n // 8,
                                         "wall_time_s": 0.01 * n, "tokens_seen": 40 * n,
                                         "test_loss": test}
                if not (task == "pairs" and name == "m1" and n == 64):
                    if task == "pairs" and name == "m2" and n == 128:
                        distances["other"] = -1e-4
                    entry["hessian"] = _hessian(rng, trace, distances, train_loss=test - gap,
                                                gap=gap)
                per_size[str(n)] = entry
            runs[name] = per_size
        (folder / f"{task}.json").write_text(json.dumps({"task": task, "curves": curves}))
        (folder / f"{task}.runs.json").write_text(json.dumps(
            {"format_version": 1, "task": task, "kind": tasks[task],
             "tokens_per_example": tokens, "runs": runs, "hessian_pretrained": pretrained}))
    (folder / "suite.json").write_text(json.dumps(
        {"format_version": 1, "zoo": "hub", "seed": seed, "target": TARGET,
         "budgets": BUDGETS, "n0": 16, "tasks": {t: {"kind": k} for t, k in tasks.items()}}))
    return folder
