"""Time and memory of the probe-set eNTK (lensllm.hf.ntk.measure_ntk) on GPT-2 style models.

Each (model size, parameter subset) runs in a fresh Python process so that its peak
memory is not hidden by an earlier run's allocations.  Models are random-initialised from
configs (cost does not depend on the weights) with eager attention.  Reported:

* P: selected parameters; G: the N x P float32 gradient matrix the exact kernel needs;
* grad s: the per-example autograd loop; total s: loop + kernel + eigendecomposition;
* peak MB: peak RSS of the process during the timed runs minus its RSS right after the
  model was built (sampled RSS, see lensllm.hf.ntk._memory): activations, gradients and G on
  top of the loaded model;
* with --vmap-size, the torch.func.vmap(grad) reference for that size on all parameters,
  as a ratio to the loop.

Timings on a shared CPU are noisy (other processes compete for the cores): use --repeats
to keep the best of several runs.

    python benchmarks/ntk_cost.py                       # defaults: 16 x 128 tokens, 8k vocab
    python benchmarks/ntk_cost.py --sizes 96x4x4 --subsets all --projection-dim 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DEFAULT_SIZES = "96x4x4,256x4x8,384x10x6"
MB = 2**20


def parse_size(text: str) -> tuple[int, int, int]:
    """``"384x10x6"`` -> (n_embd, n_layer, n_head)."""
    try:
        d, layers, heads = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not d x layers x heads") from None
    if d % heads:
        raise argparse.ArgumentTypeError(f"size {text!r}: {d} is not divisible by {heads} heads")
    return d, layers, heads


def build(job: dict):
    """The model and the probe set of one job (inside the worker process)."""
    import torch
    import transformers

    d, layers, heads = job["size"]
    cfg = transformers.GPT2Config(n_embd=d, n_layer=layers, n_head=heads,
                                  vocab_size=job["vocab"], n_positions=max(job["seq_len"], 32),
                                  bos_token_id=0, eos_token_id=0)
    cfg._attn_implementation = "eager"  # vmap needs it; the loop gives the same numbers
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    generator = torch.Generator().manual_seed(1)
    examples = []
    for _ in range(job["examples"]):
        ids = torch.randint(0, job["vocab"], (job["seq_len"],), generator=generator)
        labels = ids.clone()
        labels[:job["prompt_len"]] = -100
        examples.append({"input_ids": ids, "labels": labels})
    return model, examples


def run_loop(job: dict) -> dict:
    from lensllm.hf.ntk import measure_ntk

    model, examples = build(job)
    baseline = current_rss()
    measure_ntk(model, examples[:2], params=job["subset"])  # warm-up: lazy init
    best, peak = None, 0
    for _ in range(job["repeats"]):
        m = measure_ntk(model, examples, params=job["subset"],
                        projection_dim=job["projection_dim"], projection=job["projection"])
        peak = max(peak, m.peak_rss_bytes)
        if best is None or m.wall_seconds < best.wall_seconds:
            best = m
    return {"model_params": sum(p.numel() for p in model.parameters()),
            "P": best.n_params, "D": best.feature_dim, "grad_s": best.gradient_seconds,
            "total_s": best.wall_seconds, "peak_mb": (peak - baseline) / MB,
            "eff_rank": best.effective_rank}


def current_rss() -> int:
    """Resident memory now; peaks are reported relative to it, taken right after the model
    is built (the allocator keeps freed memory, so a later baseline would hide the
    warm-up's activations and G)."""
    from lensllm.hf.ntk._memory import PeakMemory

    with PeakMemory() as probe:
        pass
    return probe.start_bytes


def run_vmap(job: dict) -> dict:
    """Reference: per-example gradients of all parameters with torch.func.vmap(grad)."""
    import torch
    from torch.func import functional_call, grad, vmap

    from lensllm.hf.ntk._memory import PeakMemory
    from lensllm.hf.ntk.measure import kernel_matrix

    model, examples = build(job)
    baseline = current_rss()
    params = {n: p.detach() for n, p in model.named_parameters()}
    ids = torch.stack([ex["input_ids"] for ex in examples])
    labels = torch.stack([ex["labels"] for ex in examples])

    def loss_one(weights, one_ids, one_labels):
        logits = functional_call(model, weights, (one_ids[None],), {"use_cache": False})
        return torch.nn.functional.cross_entropy(logits.logits[0, :-1], one_labels[1:],
                                                 ignore_index=-100)

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=job["vmap_chunk"])
    per_example(params, ids[:2], labels[:2])  # warm-up
    best, peak = None, 0
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        with PeakMemory() as memory:
            grads = per_example(params, ids, labels)
            rows = torch.cat([g.reshape(len(examples), -1) for g in grads.values()], dim=1)
            del grads
            kernel_matrix(rows)
        seconds = time.perf_counter() - start
        del rows
        peak = max(peak, memory.peak_bytes)
        best = seconds if best is None else min(best, seconds)
    return {"total_s": best, "peak_mb": (peak - baseline) / MB}


def spawn(job: dict) -> dict:
    """Run one job in a fresh interpreter; returns its JSON result (or the error)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)],
                          capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:160]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="comma-separated d x layers x heads (default %(default)s)")
    parser.add_argument("--subsets", default="all,last", help="default %(default)s")
    parser.add_argument("--examples", type=int, default=16, help="probe examples N")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per example")
    parser.add_argument("--prompt-len", type=int, default=0,
                        help="leading tokens not scored (labels -100)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--projection-dim", type=int, default=None)
    parser.add_argument("--projection", choices=("sparse", "gaussian"), default="sparse")
    parser.add_argument("--vmap-size", default="96x4x4",
                        help="size for the vmap reference, or 'none' (default %(default)s)")
    parser.add_argument("--vmap-chunk", type=int, default=None,
                        help="vmap chunk_size (default: all examples at once)")
    parser.add_argument("--repeats", type=int, default=1, help="keep the best of R runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads in the workers (default: torch's choice; "
                        "on a busy shared CPU 1 thread can be many times faster)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        job = json.loads(args.worker)
        if job["threads"]:
            import torch

            torch.set_num_threads(job["threads"])
        result = run_vmap(job) if job["kind"] == "vmap" else run_loop(job)
        print(json.dumps(result))
        return

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    common = {"examples": args.examples, "seq_len": args.seq_len, "vocab": args.vocab,
              "prompt_len": args.prompt_len, "repeats": args.repeats,
              "projection_dim": args.projection_dim, "projection": args.projection,
              "vmap_chunk": args.vmap_chunk, "threads": args.threads}
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"N = {args.examples} examples x {args.seq_len} tokens, vocab {args.vocab}, "
          f"torch {torch.__version__}, {threads} threads, "
          f"{os.cpu_count()} CPUs"
          + (f", projection {args.projection} k={args.projection_dim}"
             if args.projection_dim else ""))
    header = (f"{'model':<12} {'params':>8} {'subset':<6} {'P':>9} {'G MB':>8} "
              f"{'grad s':>7} {'total s':>8} {'peak MB':>8}")
    print(header)
    print("-" * len(header))
    loop_times: dict[tuple[int, int, int], float] = {}
    for size in sizes:
        name = "d{}L{}H{}".format(*size)
        for subset in subsets:
            r = spawn({**common, "kind": "loop", "size": size, "subset": subset})
            if "error" in r:
                print(f"{name:<12} {'':>8} {subset:<6} error: {r['error']}")
                continue
            if subset == "all":
                loop_times[size] = r["total_s"]
            g_mb = args.examples * r["D"] * 4 / MB
            print(f"{name:<12} {r['model_params'] / 1e6:>7.2f}M {subset:<6} {r['P']:>9,} "
                  f"{g_mb:>8.1f} {r['grad_s']:>7.2f} {r['total_s']:>8.2f} {r['peak_mb']:>8.0f}")
    if args.vmap_size.lower() != "none":
        size = parse_size(args.vmap_size)
        name = "d{}L{}H{}".format(*size)
        r = spawn({**common, "kind": "vmap", "size": size, "subset": "all"})
        if "error" in r:
            print(f"vmap reference {name}: error: {r['error']}")
        else:
            loop = loop_times.get(size) or spawn(
                {**common, "kind": "loop", "size": size, "subset": "all"}).get("total_s")
            ratio = f", {r['total_s'] / loop:.2f}x the loop" if loop else ""
            chunk = args.vmap_chunk or args.examples
            print(f"vmap reference {name} all params (chunk {chunk}): {r['total_s']:.2f} s, "
                  f"peak +{r['peak_mb']:.0f} MB{ratio}")


if __name__ == "__main__":
    main()
