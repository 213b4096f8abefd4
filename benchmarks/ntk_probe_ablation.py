"""NTK probe ablation on a measured suite: which parameters, how many probe examples,
projection on or off -- what each costs and how it changes what the measured F says.

For every task of the suite and every candidate, the probe-set eNTK is measured again
under each setting (by default one factor at a time around the suite's own NTK
setting, read from its ``suite.json``: parameters last / all / lora, probe size
16 / 32 / 64, projection toggled), and F(Θ, t) is computed from it as the paper does
(mode ``measured``): η and t are those the suite attached to the candidate's curve (the
learning rate of its fine-tuning runs and the optimiser steps of its smallest run), the
projections divided by the probe size, exactly as ``lensllm run`` builds the spectrum.
So only the kernel changes between settings, never the training it is compared with.

Per setting and task it reports the Spearman correlation across candidates of F with

* D_l of the rectified law ``B / (D_l + D^β) + E`` fitted to the candidate's full curve
  (zero-shot point and every size, as the ``rectified`` method fits it);
* the knee of the curve, defined here as the rectified fit's D0 = D_l^(1/β): the data
  size at which the fitted loss has shed half its zero-shot excess over E (the
  "pre-learned data size"; the pooled selector's knee is the same quantity);
* the suite's exported F (the default setting's ranking), plus a check that the
  default setting reproduces the exported F.

Two rows need no kernel and say what F adds: the same correlations for the candidates'
parameter counts and for their zero-shot losses.

Cost: each measurement runs in its own child process, forked from this one after
torch and transformers are imported (so a measurement does not pay the imports again,
and its peak memory is its own: a forked child's ``ru_maxrss`` starts from its own
RSS), with one torch thread unless --threads says otherwise, as the suite's NTK jobs
run.  It is timed around the ``measure_ntk`` call only (gradients, kernel,
eigendecomposition; loading the model and tokenising the probe are not counted).  CPU
seconds are the child's CPU time (``time.process_time``), comparable on a busy machine;
wall seconds are inflated by whatever else runs.  Memory is the child's peak RSS
(``ru_maxrss``) at the end, and the rise of that peak during the measurement over its
value with the model and probe loaded (so it counts the measurement's activations,
gradient rows and kernel, and not memory the load itself peaked at).

    python benchmarks/ntk_probe_ablation.py                       # the package's zoo suite
    python benchmarks/ntk_probe_ablation.py --suite /work/build/export --tasks foldoc
    python benchmarks/ntk_probe_ablation.py --settings last/32,all/32/k4096 --json out.json

Settings are ``PARAMS/PROBE[/kDIM]``: PARAMS ``last``, ``all`` or ``lora`` (rank-8
adapters on the architecture's default modules, freshly initialised from --seed: B = 0,
so the kernel is that of the B matrices), PROBE the number of probe examples, ``kDIM``
a sparse (CountSketch) random projection of the gradient rows to DIM columns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from lensllm.core.curves import Curve
from lensllm.core.laws import ntk_term
from lensllm.core.selectors.lawfit import RectifiedFit
from lensllm.core.suites import load_suite
from lensllm.errors import InputError
from lensllm.fileio import atomic_write_text, canonical_json

PARAM_SUBSETS = ("last", "all", "lora")
PROBE_SIZES = (16, 32, 64)
DEFAULT_PROJECTION_DIM = 1024
MB = 2**20


@dataclass(frozen=True)
class Setting:
    """One way to measure the eNTK: parameter subset, probe size, projection width."""

    params: str
    probe: int
    projection_dim: int | None = None

    @property
    def label(self) -> str:
        return f"{self.params}/{self.probe}" + (f"/k{self.projection_dim}"
                                                if self.projection_dim else "")


def parse_setting(text: str) -> Setting:
    """``"last/32"`` or ``"all/64/k1024"`` -> a Setting."""
    parts = text.strip().split("/")
    ok = len(parts) in (2, 3) and parts[0] in PARAM_SUBSETS and parts[1].isdigit() \
        and int(parts[1]) >= 2 and (len(parts) == 2 or (parts[2][:1] == "k"
                                                        and parts[2][1:].isdigit()
                                                        and int(parts[2][1:]) >= 1))
    if not ok:
        raise InputError(f"setting {text.strip()!r} is not PARAMS/PROBE[/kDIM] with PARAMS "
                         f"one of {', '.join(PARAM_SUBSETS)}, PROBE >= 2 and DIM >= 1 "
                         "(e.g. last/32 or all/64/k1024)")
    return Setting(parts[0], int(parts[1]), int(parts[2][1:]) if len(parts) == 3 else None)


def one_factor_settings(default: Setting, projection_dim: int) -> list[Setting]:
    """The default, then each factor varied alone: parameters, probe size, projection."""
    out = [default]
    out += [Setting(p, default.probe, default.projection_dim) for p in PARAM_SUBSETS]
    out += [Setting(default.params, n, default.projection_dim) for n in PROBE_SIZES]
    out.append(Setting(default.params, default.probe,
                       None if default.projection_dim else projection_dim))
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- worker


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """One eNTK measurement and its cost (:func:`isolated` runs it in a child process)."""
    import resource

    import torch

    from lensllm.hf import Candidate, load_candidate, load_task
    from lensllm.hf.ntk import measure_ntk

    torch.set_num_threads(job["threads"])
    lora = job["params"] == "lora"
    torch.manual_seed(job["seed"])  # the LoRA adapters' initial values
    candidate = Candidate(job["model"], job["path"], method="lora" if lora else "full")
    model, tokenizer = load_candidate(candidate, apply_method=lora, device="cpu")
    probe = load_task(**job["task"]).probe_set(
        tokenizer, job["probe"], max_length=job["max_length"],
        encoder_decoder=candidate.checkpoint().is_encoder_decoder)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    cpu, wall = time.process_time(), time.perf_counter()
    measured = measure_ntk(model, probe, params=job["params"],
                           projection_dim=job["projection_dim"], seed=job["seed"])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"eigenvalues": measured.eigenvalues.tolist(),
            "projections": measured.projections.tolist(),
            "n_params": measured.n_params, "feature_dim": measured.feature_dim,
            "cpu_s": cpu, "wall_s": wall, "peak_mb": after * 1024 / MB,
            "rise_mb": (after - before) * 1024 / MB}


def _child(job: dict[str, Any], channel: Any) -> None:
    try:
        result = measure(job)
    except Exception as error:  # reported as this measurement's error, the rest go on
        result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    channel.send(result)
    channel.close()


def isolated(job: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure` in a forked child process; its result, or ``{"error": ...}``."""
    # Imported once here and shared by every forked child (peft only where installed:
    # the lora setting needs it, the others do not).
    import transformers  # noqa: F401

    import lensllm.hf.ntk  # noqa: F401
    with contextlib.suppress(ImportError):
        import peft  # noqa: F401

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(job, send))
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = None
    child.join()
    return result if result is not None else {
        "error": f"the measurement process died (exit code {child.exitcode})"}


# --------------------------------------------------------------------------- inputs


@dataclass
class TaskInputs:
    """What one task's ablation needs: its curves, its task file and load settings."""

    name: str
    curves: list[Curve]
    task_spec: dict[str, Any]
    target: int
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it is left out


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputError(f"{what} {item!r} is not NAME=PATH")
        out[name] = value
    return out


def _suite_default(name: str) -> Any:
    """A default of the suite build (lensllm.run.suite.SuiteSettings), so the probe set
    is drawn from the same training pool as the build's."""
    from lensllm.run.suite import SuiteSettings

    return {f.name: f for f in fields(SuiteSettings)}[name].default


def resolve_inputs(args: argparse.Namespace) -> tuple[dict[str, Any], list[TaskInputs],
                                                      dict[str, str]]:
    """The suite's index, its tasks' inputs and the candidates' checkpoint paths."""
    suite = load_suite(args.suite, tasks=args.tasks.split(",") if args.tasks else None)
    if suite.folder is None:
        raise InputError(f"suite {args.suite!r} has no runs to probe; give a suite folder")
    folder = suite.folder
    meta = json.loads((folder / "suite.json").read_text("utf-8"))
    task_files = _pairs(args.task_file, "--task-file")
    paths = _pairs(args.model, "--model")
    wanted = args.candidates.split(",") if args.candidates else None
    tasks = []
    for curve_set in suite.curve_sets:
        models = curve_set.models
        unknown = [m for m in wanted or () if m not in models]
        if unknown:
            raise InputError(f"task {curve_set.task!r} has no candidate {unknown[0]!r}; it has "
                             f"{', '.join(models)}")
        chosen = [c for c in curve_set if wanted is None or c.model in wanted]
        skipped = {c.model: "its curve has no NTK spectrum with a step count t"
                   for c in chosen if c.ntk is None or c.ntk.steps is None}
        recorded = meta["tasks"][curve_set.task].get("file", "")
        path = Path(task_files.get(curve_set.task)
                    or Path(args.cache_dir).expanduser() / "tasks" / recorded)
        if not path.is_file():
            raise InputError(f"task file {path} of task {curve_set.task!r} does not exist; "
                             f"pass --task-file {curve_set.task}=PATH")
        spec = {"path": str(path), "name": curve_set.task, "n0": int(meta["n0"]),
                "test_size": _suite_default("test_examples"),
                "val_size": args.val_size or _suite_default("val_size"),
                "seed": int(meta["seed"])}
        tasks.append(TaskInputs(curve_set.task,
                                [c for c in chosen if c.model not in skipped], spec,
                                suite.target, skipped))
    needed = {c.model for t in tasks for c in t.curves} - set(paths)
    if needed:
        from lensllm.zoo.manifest import load_zoo

        manifest = load_zoo(Path(args.cache_dir).expanduser(), meta["zoo"], int(meta["seed"]))
        for name in sorted(needed):
            paths[name] = str(manifest.candidate(name).path)
    return meta, tasks, paths


# --------------------------------------------------------------------------- statistics


def curve_shape(curve: Curve, target: int) -> tuple[float, float]:
    """(D_l, knee D0) of the rectified law fitted to the whole curve."""
    _, fit = RectifiedFit().fit_curve(curve, target)
    return float(fit.params["D_l"]), float(fit.params["D0"])


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho, None when fewer than 3 pairs or either side is constant."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def f_measured(eigenvalues: Sequence[float], projections: Sequence[float],
               curve: Curve) -> float:
    """F at the curve's measured t and η, projections per probe example (the paper's
    ``measured`` mode, as lensllm run attaches spectra)."""
    lam = np.asarray(eigenvalues, dtype=float)
    a = np.asarray(projections, dtype=float) / lam.size
    return float(ntk_term(lam, a, curve.ntk.learning_rate, curve.ntk.steps))


def correlations(rows: list[dict[str, Any]], tasks: list[TaskInputs],
                 settings: list[Setting]) -> list[dict[str, Any]]:
    """Per setting and task: rho of F with D_l, with the knee and with the suite's F."""
    out = []
    for task in tasks:
        shapes = {c.model: curve_shape(c, task.target) for c in task.curves}
        suite_f = {c.model: float(ntk_term(c.ntk.eigenvalues, c.ntk.projections,
                                           c.ntk.learning_rate, c.ntk.steps))
                   for c in task.curves}
        columns = [("suite export", suite_f)]
        for setting in settings:
            columns.append((setting.label, {r["model"]: r["F"] for r in rows
                                            if r["task"] == task.name
                                            and r["setting"] == setting.label
                                            and "F" in r}))
        # Baselines that need no kernel: does F tell more than size or zero-shot loss?
        baselines = [("baseline: params", {c.model: c.params for c in task.curves
                                           if c.params is not None}),
                     ("baseline: zero-shot loss", {c.model: c.zero_shot for c in task.curves
                                                   if c.zero_shot is not None})]
        for label, f in columns + baselines:
            models = [m for m in shapes if m in f]
            values = [f[m] for m in models]
            out.append({
                "task": task.name, "setting": label, "n": len(models),
                "rho_dl": spearman(values, [shapes[m][0] for m in models]),
                "rho_knee": spearman(values, [shapes[m][1] for m in models]),
                "rho_suite": spearman(values, [suite_f[m] for m in models]),
                "max_rel_diff_suite": (max(abs(f[m] / suite_f[m] - 1) for m in models)
                                       if models and all(suite_f[m] > 0 for m in models)
                                       and (label, f) not in baselines else None)})
    return out


# --------------------------------------------------------------------------- tables


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, fmt)


def _table(header: Sequence[str], body: list[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _span(values: np.ndarray) -> str:
    """``"312,256-1,838,848"``, or one number when all are equal."""
    low, high = int(values.min()), int(values.max())
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def _critical_rho(n: int) -> float:
    """|ρ| above which p < 0.05 (two-sided) for n pairs, t approximation."""
    from scipy.stats import t as student

    q = float(student.ppf(0.975, n - 2))
    return q / np.sqrt(n - 2 + q * q)


def cost_table(rows: list[dict[str, Any]], settings: list[Setting]) -> str:
    body = []
    for setting in settings:
        done = [r for r in rows if r["setting"] == setting.label and "cpu_s" in r]
        if not done:
            body.append([setting.label] + ["n/a"] * 8)
            continue
        pick = {k: np.array([r[k] for r in done], dtype=float)
                for k in ("n_params", "feature_dim", "cpu_s", "wall_s", "peak_mb", "rise_mb")}
        body.append([
            setting.label, str(len(done)), _span(pick["n_params"]), _span(pick["feature_dim"]),
            f"{np.median(pick['cpu_s']):.2f}", f"{pick['cpu_s'].max():.2f}",
            f"{np.median(pick['wall_s']):.2f}", f"{pick['peak_mb'].max():.0f}",
            f"{np.median(pick['rise_mb']):.0f} / {pick['rise_mb'].max():.0f}"])
    return _table(["setting", "runs", "P selected", "row length", "CPU s median",
                   "CPU s max", "wall s median", "peak RSS MB max",
                   "peak rise MB median / max"], body)


def cpu_by_candidate(rows: list[dict[str, Any]], settings: list[Setting]) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    body = []
    for model in models:
        cells = []
        for setting in settings:
            cpu = [r["cpu_s"] for r in rows if r["model"] == model
                   and r["setting"] == setting.label and "cpu_s" in r]
            cells.append(_num(float(np.mean(cpu)) if cpu else None, ".2f"))
        body.append([model, *cells])
    return _table(["candidate"] + [s.label for s in settings], body)


def effect_table(stats: list[dict[str, Any]]) -> str:
    labels = list(dict.fromkeys(s["setting"] for s in stats))
    tasks = list(dict.fromkeys(s["task"] for s in stats))
    body = []
    for label in labels:
        mine = [s for s in stats if s["setting"] == label]
        for s in mine:
            body.append([label, s["task"], str(s["n"]), _num(s["rho_dl"], "+.2f"),
                         _num(s["rho_knee"], "+.2f"), _num(s["rho_suite"], "+.2f"),
                         _num(s["max_rel_diff_suite"], ".1e")])
        if len(tasks) > 1:
            def mean(key: str, mine: list[dict[str, Any]] = mine) -> float | None:
                values = [s[key] for s in mine if s[key] is not None]
                return float(np.mean(values)) if values else None
            body.append([label, "**mean**", "", _num(mean("rho_dl"), "+.2f"),
                         _num(mean("rho_knee"), "+.2f"), _num(mean("rho_suite"), "+.2f"),
                         ""])
    return _table(["setting", "task", "n", "ρ(F, D_l)", "ρ(F, knee)", "ρ(F, suite F)",
                   "max |F/F_suite - 1|"], body)


# --------------------------------------------------------------------------- main


def _earlier(path: Path | None) -> dict[str, dict[str, Any]]:
    """Measurements of an earlier --json file by their job (canonical JSON); errors are
    measured again."""
    if path is None:
        return {}
    try:
        rows = json.loads(path.read_text("utf-8"))["measurements"]
        return {canonical_json(r["job"]): r for r in rows if "error" not in r}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"--reuse {path}: not a results file of this script ({error})"
                         ) from None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every (task, candidate, setting) and return the raw results."""
    meta, tasks, paths = resolve_inputs(args)
    ntk = meta.get("ntk", {})
    default = Setting(ntk.get("params", "last"), int(ntk.get("probe_size", 32)),
                      ntk.get("projection_dim"))
    settings = ([parse_setting(s) for s in args.settings.split(",") if s.strip()]
                if args.settings else one_factor_settings(default, args.projection_dim))
    training = meta.get("training", {})
    threads = args.threads or int(training.get("num_threads") or 1)
    seed = int(meta["seed"]) if args.seed is None else args.seed
    earlier = _earlier(args.reuse)
    header = {"suite": str(args.suite), "seed": seed, "threads": threads,
              "default": default.label, "settings": [s.label for s in settings]}
    rows = []
    for task in tasks:
        for curve in task.curves:
            for setting in settings:
                job = {"model": curve.model, "path": paths[curve.model],
                       "task": task.task_spec, "params": setting.params,
                       "probe": setting.probe, "projection_dim": setting.projection_dim,
                       "seed": seed, "threads": threads,
                       "max_length": int(training.get("max_length", 128))}
                reused = earlier.get(canonical_json(job))
                result = reused or isolated(job)
                row = {"task": task.name, "model": curve.model, "setting": setting.label,
                       "job": job}
                if "error" in result:
                    row["error"] = result["error"]
                else:
                    row.update({k: result[k] for k in ("n_params", "feature_dim", "cpu_s",
                                                       "wall_s", "peak_mb", "rise_mb",
                                                       "eigenvalues", "projections")})
                    # F from the stored spectrum with this curve's η and t
                    row["F"] = f_measured(result["eigenvalues"], result["projections"], curve)
                print(f"{task.name} {curve.model} {setting.label}: "
                      + (f"error: {row['error']}" if "error" in row
                         else f"{row['cpu_s']:.1f} CPU s, F = {row['F']:.4g}")
                      + (" (reused)" if reused else ""), file=sys.stderr, flush=True)
                rows.append(row)
                if args.json:  # as it goes, so an interrupted run can be reused
                    atomic_write_text(args.json, json.dumps(
                        {**header, "tasks": [t.name for t in tasks], "measurements": rows})
                        + "\n")
    return {**header, "tasks": tasks, "measurements": rows,
            "correlations": correlations(rows, tasks, settings)}


def report(result: dict[str, Any]) -> str:
    settings = [parse_setting(s) for s in result["settings"]]
    rows = result["measurements"]
    parts = [f"NTK probe ablation on suite {result['suite']} (default setting "
             f"{result['default']}; seed {result['seed']}, {result['threads']} torch "
             f"thread(s) per measurement, one forked process each)", "",
             "Cost of one measurement (measure_ntk only; CPU s = process time; memory = "
             "ru_maxrss):", "", cost_table(rows, settings), "",
             "CPU seconds by candidate (mean over tasks):", "",
             cpu_by_candidate(rows, settings), "",
             "Spearman across candidates, per task (F in mode measured; D_l and knee "
             "D0 = D_l^(1/β) from the rectified law fitted to the full curve):", "",
             effect_table(result["correlations"])]
    sizes = sorted({s["n"] for s in result["correlations"] if s["n"] >= 3})
    if sizes:
        parts += ["", "At " + ", ".join(f"n = {n}: |ρ| > {_critical_rho(n):.2f}"
                                         for n in sizes)
                  + " has p < 0.05 (two-sided, t approximation)."]
    skipped = [f"{t.name}/{m}: {why}" for t in result["tasks"] for m, why in t.skipped.items()]
    errors = [f"{r['task']}/{r['model']}/{r['setting']}: {r['error']}"
              for r in rows if "error" in r]
    if skipped or errors:
        parts += ["", "Left out:"] + [f"- {line}" for line in skipped + errors]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="zoo",
                        help="suite folder (suite.json beside <task>.json), or 'zoo' for the "
                        "package's zoo suite (default)")
    parser.add_argument("--cache-dir", default="~/.cache/lensllm",
                        help="where the suite's zoo and task files are (read only; "
                        "default %(default)s)")
    parser.add_argument("--tasks", help="comma-separated tasks (default: all in the suite)")
    parser.add_argument("--candidates", help="comma-separated candidates (default: all)")
    parser.add_argument("--settings",
                        help="comma-separated PARAMS/PROBE[/kDIM] (default: the suite's "
                        "setting and each factor varied alone)")
    parser.add_argument("--projection-dim", type=int, default=DEFAULT_PROJECTION_DIM,
                        help="k of the 'projection on' setting (default %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="projection and LoRA-init seed (default: the suite's seed)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per measurement (default: the suite's "
                        "training.num_threads)")
    parser.add_argument("--val-size", type=int, default=None,
                        help="validation examples the build held out (default: the suite "
                        "build's default)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="checkpoint of a candidate (default: from the zoo manifest)")
    parser.add_argument("--task-file", action="append", default=[], metavar="TASK=PATH",
                        help="task file (default: CACHE_DIR/tasks/<file in suite.json>)")
    parser.add_argument("--json", type=Path,
                        help="also write the raw results here (rewritten after each "
                        "measurement)")
    parser.add_argument("--reuse", type=Path,
                        help="an earlier --json file: measurements of the same job (task "
                        "file, candidate, setting, seed, threads) are taken from it, F is "
                        "recomputed from the stored spectrum")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        result = run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(report(result))
    print(f"\n({time.perf_counter() - started:.0f} s wall in all; load average "
          f"{os.getloadavg()[0]:.1f} at the end)")
    if args.json:
        raw = {**result, "tasks": [t.name for t in result["tasks"]]}
        atomic_write_text(args.json, json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
