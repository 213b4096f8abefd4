"""Loading a large curve file: time and peak memory of ``lensllm.load_curves`` against
``pandas.read_csv`` of the same file, measured in the same run (and the row-by-row
reader that every file took before, for comparison).

Writes a curve file of about 617,000 rows and 45-50 MB into a temporary folder -- long
layout (``task,model,n,loss,params,family``: 68,556 models x 9 points, zero-shot
included) and wide layout (``model,0,200,...,size,family``: 617,004 models x 8 points)
-- then measures each loader in a fresh Python process (so neither sees the
other's memory): wall time of the call, and its peak resident memory above the
process's resident memory just before the call (imports done).

Usage: python benchmarks/load_curves_big.py [--layout long|wide|both] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# What each measuring process runs: {setup} imports, {call} is timed.
PROBE = """
import json, resource, sys, time
{setup}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = {call}
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_mib": (peak - before) / 1024,
                   "size": {size}}}))
"""
LOADERS = {
    "lensllm.load_curves": ("from lensllm import load_curves", "load_curves(sys.argv[1])",
                            "sum(len(c) + 1 for c in result)"),
    "pandas.read_csv": ("import pandas as pd", "pd.read_csv(sys.argv[1])", "len(result)"),
    # the reader every file took before the vectorised one (now: small or irregular files)
    "row-by-row reader": ("from lensllm.core import formats; formats.FAST_MIN_CHARS = 1e18",
                          "formats.load_curves(sys.argv[1])",
                          "sum(len(c) + 1 for c in result)"),
}


def write_file(path: Path, layout: str, models: int, points: int, seed: int = 0) -> int:
    """A curve file of ``models`` curves with ``points`` sizes each (size 0 is the
    zero-shot loss); ``long``: one row per point, ``wide``: one row per model.  Returns
    the number of data rows."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([[0], 200 * 2 ** np.arange(points - 1)])
    b = rng.uniform(20, 80, models)
    beta = rng.uniform(0.25, 0.5, models)
    e = rng.uniform(0.8, 2.0, models)
    params = rng.integers(10**7, 10**10, models)
    with path.open("w", encoding="utf-8") as out:
        if layout == "long":
            out.write("task,model,n,loss,params,family\n")
        else:
            out.write("model," + ",".join(map(str, sizes.tolist())) + ",size,family\n")
        for start in range(0, models, 5000):
            block = []
            for i in range(start, min(models, start + 5000)):
                losses = b[i] / (50 + np.maximum(sizes, 1) ** beta[i]) + e[i]
                name = f"org-{i % 97:02d}/candidate-model-{i:06d}"
                family = f"family-{i % 13}"
                if layout == "long":
                    block.extend(f"flan,{name},{n},{loss!r},{params[i]},{family}\n"
                                 for n, loss in zip(sizes.tolist(), losses.tolist(),
                                                    strict=True))
                else:
                    block.append(f"m{i:06d}," + ",".join(f"{v:.5f}" for v in losses.tolist())
                                 + f",{params[i]},{family}\n")
            out.write("".join(block))
    return models * points if layout == "long" else models


def measure(name: str, path: Path) -> dict[str, float]:
    setup, call, size = LOADERS[name]
    code = PROBE.format(setup=setup, call=call, size=size)
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=["long", "wide", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="runs per loader (best kept)")
    args = parser.parse_args()
    # both about 617,000 rows and 45-50 MB
    shapes = {"long": (68_556, 9), "wide": (617_004, 8)}
    for layout in ("long", "wide") if args.layout == "both" else (args.layout,):
        models, points = shapes[layout]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"big-{layout}.csv"
            rows = write_file(path, layout, models, points)
            mib = path.stat().st_size / 2**20
            print(f"{layout} file: {rows:,} rows, {mib:.1f} MiB ({models:,} models x "
                  f"{points} points)")
            best = {}
            for name in LOADERS:
                # the row-by-row reader takes tens of seconds: once is enough
                repeat = 1 if name == "row-by-row reader" else args.repeat
                runs = [measure(name, path) for _ in range(repeat)]
                best[name] = {"seconds": min(r["seconds"] for r in runs),
                              "peak_mib": min(r["peak_mib"] for r in runs)}
                print(f"  {name:>20}: {best[name]['seconds']:6.2f} s, peak "
                      f"+{best[name]['peak_mib']:5.0f} MiB (best of {repeat}; "
                      f"{runs[0]['size']:,} values)")
            ours, ref = best["lensllm.load_curves"], best["pandas.read_csv"]
            print(f"  ratio lensllm / pandas: time {ours['seconds'] / ref['seconds']:.2f}x, "
                  f"peak memory {ours['peak_mib'] / max(ref['peak_mib'], 1e-9):.2f}x; lensllm "
                  f"peak memory / file size {ours['peak_mib'] / mib:.2f}")


if __name__ == "__main__":
    main()
