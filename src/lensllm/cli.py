"""The ``lensllm`` command line.

Every command exits 0 on success; on bad input it prints one line ``error: ...`` to
stderr and exits 2 (never a traceback).  Heavy modules (scipy, matplotlib, torch) are
imported inside the commands that need them.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from lensllm.errors import InputError, LensLLMError, RankingWarning


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lensllm")
def app() -> None:
    """Pick the LLM to fine-tune: fit fine-tuning scaling laws to small-subset losses."""


FORMATS = click.Choice(["table", "json", "csv"])
SELECT_FORMATS = click.Choice(["table", "json"])
methods_option = click.option(
    "--methods", "-m", default=None,
    help="Comma-separated methods, options in brackets: 'ats[k=4],lensllm'.")
format_option = click.option("--format", "fmt", type=FORMATS, default="table",
                             show_default=True, help="Output format.")
plots_option = click.option("--plots", type=click.Path(path_type=Path), default=None,
                            help="Write metric plots (PNG) to this folder.")


flops_budgets_option = click.option(
    "--flops-budgets", default="fine", show_default=True,
    help="With --adaptive/--robustness: FLOPs budgets as shares of full fine-tuning "
         "(comma-separated), or 'fine' for the sweep 0.2 % ... 20 %.")


def _echo(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _int_list(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    out = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"{what}: {part!r} is not a number") from None
        if not math.isfinite(value) or value != int(value) or value <= 0:
            raise InputError(f"{what}: {part!r} must be a positive whole number of examples")
        out.append(int(value))
    if not out:
        raise InputError(f"{what}: give at least one number")
    return out


def _warn(lines) -> None:
    """Things the user should know that are not the result: stderr, one line each."""
    for line in lines:
        sys.stderr.write(f"warning: {line}\n")


def _print_evaluation(evaluation, fmt: str, plots: Path | None) -> None:
    from lensllm.report.bench import evaluation_csv, evaluation_tables, plot_evaluation

    _warn(evaluation.warnings)

    if fmt == "json":
        _echo(json.dumps(evaluation.to_records(), indent=1))
    elif fmt == "csv":
        _echo(evaluation_csv(evaluation))
    else:
        _echo(evaluation_tables(evaluation))
    if plots is not None:
        written = plot_evaluation(evaluation, plots)
        sys.stderr.write(f"wrote {len(written)} plot(s) to {plots}\n")


@app.command()
@click.option("--suite", default="lin2024", show_default=True,
              help="lin2024 (Lin et al.'s 30 LLMs x 3 tasks), zoo (curves lensllm measured "
                   "on its hub zoo), zoo-uncapped (two zoo tasks without the step cap) "
                   "or a suite folder.")
@click.option("--tasks", default=None,
              help="Comma-separated tasks of the suite (default: all; lin2024: "
                   "flan,wmt19,gigaword).")
@methods_option
@format_option
@plots_option
@click.option("--calibration", is_flag=True,
              help="Instead: coverage of each predicting method's 90 % interval.")
@click.option("--adaptive", is_flag=True,
              help="Instead: replay the adaptive search per FLOPs budget, next to AtS at "
                   "each fixed ratio and 'train everyone at size s, pick the lowest'.")
@click.option("--robustness", is_flag=True,
              help="Instead: the robustness protocol (model subsets, noise, other "
                   "targets; the adaptive search over a fine budget sweep).")
@click.option("--loto", is_flag=True,
              help="With --robustness: also leave-one-task-out of every tuned setting "
                   "(evidence prior and recency, interval gamma, adaptive p_keep), each "
                   "chosen by its rule on the other tasks (slow: several minutes).")
@flops_budgets_option
def bench(suite: str, tasks: str | None, methods: str | None, fmt: str, plots: Path | None,
          calibration: bool, adaptive: bool, robustness: bool, loto: bool,
          flops_budgets: str) -> None:
    """Replay the papers' protocol on a suite of curves (default: the bundled benchmark)."""
    from lensllm.core.selectors import DEFAULT_METHODS, split_methods
    from lensllm.core.suites import load_suite

    names = None
    if tasks is not None:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
        if not names:
            raise InputError("--tasks: give at least one task")
    if calibration + adaptive + robustness > 1:
        raise InputError("choose one of --calibration, --adaptive and --robustness")
    if loto and not robustness:
        raise InputError("--loto is part of the robustness protocol: add --robustness")
    loaded = load_suite(suite, names)
    if loto and len(loaded.curve_sets) < 2:
        raise InputError("--loto needs at least two tasks (each is scored under the "
                         "settings chosen on the others)")
    curve_sets, budgets, target = loaded.curve_sets, loaded.budgets, loaded.target
    if robustness:
        tokens = loaded.tokens_per_example
        _robustness(curve_sets, target, split_methods(methods) if methods else None,
                    tokens if all(c.task in tokens for c in curve_sets) else None,
                    _share_list(flops_budgets), fmt, budgets if loto else None)
    elif calibration:
        _bench_calibration(curve_sets, split_methods(methods) if methods else ["lensllm"],
                           budgets, target, fmt)
    elif adaptive:
        missing = [c.task for c in curve_sets if c.task not in loaded.tokens_per_example]
        if missing:
            raise InputError(f"--adaptive needs tokens per example, which suite {suite!r} "
                             f"lacks for task {missing[0]!r} (its .runs.json)")
        _bench_adaptive(curve_sets, split_methods(methods)[0] if methods else "lensllm",
                        _share_list(flops_budgets), budgets, target, fmt, plots,
                        loaded.tokens_per_example)
    else:
        from lensllm.core.evaluation import evaluate

        method_list = split_methods(methods) if methods else list(DEFAULT_METHODS)
        evaluation = evaluate(curve_sets, methods=method_list, budgets=budgets,
                              target=target)
        _print_evaluation(evaluation, fmt, plots)


def _share_list(text: str) -> list[float]:
    if text.strip().lower() == "fine":
        from lensllm.core.robustness import FINE_BUDGETS

        return list(FINE_BUDGETS)
    out = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"--flops-budgets: {part.strip()!r} is not a number") from None
        if not (math.isfinite(value) and 0 < value <= 1):
            raise InputError(f"--flops-budgets: {part.strip()} must be a share in (0, 1]")
        out.append(value)
    return out


def _bench_calibration(curve_sets, methods, budgets, target, fmt: str) -> None:
    from dataclasses import asdict

    from lensllm.core.evaluation import calibration
    from lensllm.report.bench import calibration_table

    cells = [cell for m in methods for cell in calibration(curve_sets, m, budgets, target)]
    if fmt == "table":
        _echo(calibration_table(cells))
    elif fmt == "json":  # no interval: null (JSON has no NaN)
        _echo(json.dumps([{k: None if isinstance(v, float) and math.isnan(v) else v
                           for k, v in asdict(c).items()} for c in cells], indent=1))
    else:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(asdict(cells[0])), lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(c) for c in cells)
        _echo(buf.getvalue())


def _bench_adaptive(curve_sets, method, shares, budgets, target, fmt, plots,
                    tokens_per_example) -> None:
    from lensllm.core.search import adaptive_benchmark
    from lensllm.report.bench import adaptive_table

    rows, fixed = adaptive_benchmark(curve_sets, target, tokens_per_example, shares,
                                     selector=method, fixed_budgets=budgets)
    if not rows:
        raise InputError("no FLOPs budget fits the warm-up (every candidate on the three "
                         "smallest sizes); give larger --flops-budgets")
    if fmt == "json":
        _echo(json.dumps({"adaptive": rows, "fixed": fixed}, indent=1))
    else:
        _echo(adaptive_table(rows, fixed))
    if plots is not None:
        from lensllm.report.plots import plot_pareto

        path = plot_pareto(Path(plots) / "adaptive-pareto.png", rows, fixed)
        sys.stderr.write(f"wrote {path}\n")


def _robustness(curve_sets, target, methods, tokens, shares, fmt,
                loto_budgets=None) -> None:
    """The robustness protocol; the adaptive part when every task has its tokens; with
    ``loto_budgets``, leave-one-task-out of every tuned setting on those budgets."""
    from lensllm.core.robustness import (
        RobustnessSettings,
        adaptive_protocol,
        build_variants,
        robustness,
    )
    from lensllm.report.bench import adaptive_sweep_table, loto_table, robustness_table

    settings = RobustnessSettings()
    report = robustness(curve_sets, target, methods or ("ats", "lensllm"), settings)
    variants = build_variants(curve_sets, target, settings)
    rows = []
    if tokens is not None:
        rows = adaptive_protocol([v for v in variants if v.name in ("in-sample", "noise 2 %")],
                                 tokens, shares)
    if fmt == "json":
        held_out = []
        if loto_budgets is not None:
            from lensllm.core.tuning import leave_one_task_out_settings

            held_out = leave_one_task_out_settings(curve_sets, target, loto_budgets, tokens,
                                                   variants)
        _echo(json.dumps({**report.to_dict(), "adaptive": [r.to_dict() for r in rows],
                          **({"loto": [h.to_dict() for h in held_out]}
                             if loto_budgets is not None else {})}, indent=1))
        return
    _echo(robustness_table(report))
    if rows:
        _echo("\nadaptive search (RelAcc mean over the variant's cases; AtS at the cheapest "
              "ratio using at least the FLOPs the search used; lowest@s: train everyone at "
              "the largest size s the budget allows, pick the lowest)")
        _echo(adaptive_sweep_table(rows))
    if loto_budgets is not None:
        from lensllm.core.tuning import leave_one_task_out_settings

        # each setting's table as soon as it is done: the whole check takes minutes
        def show(block) -> None:
            _echo("\n" + loto_table(block))
            sys.stdout.flush()
        leave_one_task_out_settings(curve_sets, target, loto_budgets, tokens, variants,
                                    on_setting=show)


@app.command("evaluate")
@click.argument("curves", type=click.Path(path_type=Path))
@click.option("--target", type=int, required=True,
              help="Data size whose true loss every model has.")
@click.option("--budgets", default=None,
              help="Comma-separated budgets (default: target/8 ... target/512 when the "
                   "file has them, else its own sizes up to target/2 that leave every "
                   "model 3 sizes).")
@methods_option
@format_option
@plots_option
@click.option("--robustness", is_flag=True,
              help="Instead: the robustness protocol on this file (model subsets, noise, "
                   "other targets the file measures; with --tokens-per-example also the "
                   "adaptive search).")
@click.option("--adaptive", is_flag=True,
              help="Instead: replay the adaptive search on this file per FLOPs budget "
                   "(needs every model's parameter count and --tokens-per-example).")
@click.option("--tokens-per-example", type=float, default=None,
              help="Average tokens per fine-tuning example, for the FLOPs of "
                   "--adaptive / --robustness.")
@flops_budgets_option
def evaluate_cmd(curves: Path, target: int, budgets: str | None, methods: str | None,
                 fmt: str, plots: Path | None, robustness: bool, adaptive: bool,
                 tokens_per_example: float | None, flops_budgets: str) -> None:
    """Run the selection protocol on your own curves."""
    from lensllm.core.evaluation import default_budgets, evaluate, usable_methods
    from lensllm.core.formats import load_curves
    from lensllm.core.selectors import DEFAULT_METHODS, split_methods

    curve_set = load_curves(curves)
    if robustness and adaptive:
        raise InputError("choose one of --robustness and --adaptive")
    if tokens_per_example is not None and not (
            math.isfinite(tokens_per_example) and tokens_per_example > 0):
        raise InputError("--tokens-per-example must be a number > 0")
    if adaptive or (robustness and tokens_per_example is not None):
        missing = [c.model for c in curve_set if c.params is None]
        if missing:
            raise InputError(
                f"the adaptive search needs every model's parameter count ('params' "
                f"column, 'size' in wide files); missing for {', '.join(missing[:3])}"
                + (" ..." if len(missing) > 3 else ""))
    tokens = ({curve_set.task: tokens_per_example} if tokens_per_example is not None
              else None)
    if robustness:
        _robustness([curve_set], target, split_methods(methods) if methods else None,
                    tokens, _share_list(flops_budgets), fmt)
        return
    if adaptive:
        if tokens is None:
            raise InputError("--adaptive needs --tokens-per-example (average tokens per "
                             "fine-tuning example), to count FLOPs")
        from lensllm.core.evaluation import default_budgets

        _bench_adaptive([curve_set], split_methods(methods)[0] if methods else "lensllm",
                        _share_list(flops_budgets),
                        _int_list(budgets, "--budgets") or default_budgets(target), target,
                        fmt, plots, tokens)
        return
    method_list = split_methods(methods) if methods else list(DEFAULT_METHODS)
    budget_list = _int_list(budgets, "--budgets")
    if methods is None:
        # The default methods adapt to the file: one that needs a column the file lacks
        # is left out with a note; a method the user names is never left out silently.
        if budget_list is None:
            budget_list = default_budgets(target, tasks=[curve_set])
        method_list, notes = usable_methods([curve_set], method_list, budget_list)
        for note in notes:
            sys.stderr.write(f"note: {note}\n")
    evaluation = evaluate(curve_set, methods=method_list, budgets=budget_list, target=target)
    _print_evaluation(evaluation, fmt, plots)


@app.command("select")
@click.argument("curves", type=click.Path(path_type=Path))
@click.option("--budget", type=int, required=True, help="Use only sizes <= this many examples.")
@click.option("--target", type=int, required=True, help="Data size to predict the loss at.")
@click.option("--method", default="lensllm", show_default=True, help="Selection method.")
@click.option("--format", "fmt", type=SELECT_FORMATS, default="table", show_default=True)
def select_cmd(curves: Path, budget: int, target: int, method: str, fmt: str) -> None:
    """Rank the models of a curve file and name the one to fine-tune."""
    from lensllm import select
    from lensllm.core.formats import load_curves
    from lensllm.report.bench import selection_json, selection_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankingWarning)  # printed below, once each
        selection = select(load_curves(curves), method, budget=budget, target=target)
    _warn(selection.warnings)
    if fmt == "json":
        _echo(json.dumps(selection_json(selection), indent=1))
    else:
        _echo(selection_table(selection))


@app.command()
@click.argument("curves", type=click.Path(path_type=Path))
@click.option("--model", required=True, help="The model (row) to fit.")
@click.option("--law", type=click.Choice(["lensllm", "rectified", "vanilla"]),
              default="lensllm", show_default=True, help="Law family.")
@click.option("--budget", type=int, default=None, help="Fit only sizes <= this.")
@click.option("--target", type=int, default=None,
              help="Size to extrapolate to (default: the largest measured size beyond the "
                   "budget, else 8 x the largest fitted size).")
@click.option("--mode", type=click.Choice(["measured", "fit-t"]), default="measured",
              show_default=True,
              help="LensLLM law with NTK data: F at the measured t, or t fitted.")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help="Write a log-log plot (PNG).")
@click.option("--format", "fmt", type=SELECT_FORMATS, default="table", show_default=True)
def fit(curves: Path, model: str, law: str, budget: int | None, target: int | None,
        mode: str, plot: Path | None, fmt: str) -> None:
    """Fit one law to one model's curve; print the parameters and the extrapolation."""
    from lensllm.core.formats import load_curves
    from lensllm.report.bench import fit_report

    report = fit_report(load_curves(curves), model, law, budget, target, mode, plot)
    if fmt == "json" and report["json"]["note"]:
        sys.stderr.write(f"note: {report['json']['note']}\n")  # the text output shows it
    if fmt == "json":
        _echo(json.dumps(report["json"], indent=1))
    else:
        _echo(report["text"])


@app.command("run")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True,
              help="Also fine-tune every candidate at the target size and score every "
                   "method on these candidates.")
@click.option("--flops-budget", type=float, default=None,
              help="Adaptive search: FLOPs share of fine-tuning every candidate at the "
                   "target (overrides the config).")
@click.option("--search", type=click.Choice(["adaptive", "grid"]), default=None,
              help="Override the config's search.")
@click.option("--executor", "executor_kind", type=click.Choice(["local", "ray"]),
              default=None, help="Override the config's executor.")
@click.option("--workers", type=int, default=None, help="Local executor: worker processes.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Override the config's run directory.")
@click.option("--format", "fmt", type=SELECT_FORMATS, default="table", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--wait", is_flag=True,
              help="If another run holds the run directory, wait for it to end instead "
                   "of refusing.")
@click.option("--force", is_flag=True,
              help="Continue a run directory made with a different config (finished jobs "
                   "whose settings still match are reused).")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print every job the run would start, its tokens, FLOPs and estimated "
                   "time, and train nothing.")
@click.option("--no-measure", is_flag=True,
              help="With --plan: skip the short measured run per candidate (no times).")
def run_cmd(config: Path, verify: bool, flops_budget: float | None, search: str | None,
            executor_kind: str | None, workers: int | None, run_dir: Path | None, fmt: str,
            quiet: bool, wait: bool, force: bool, plan_only: bool, no_measure: bool) -> None:
    """Fine-tune, measure NTKs, fit, rank and report, from a YAML run config."""
    from lensllm.report.bench import selection_table
    from lensllm.report.run_report import write_report
    from lensllm.run.config import load_config
    from lensllm.run.lock import RunLock
    from lensllm.run.pipeline import run, summary_json
    from lensllm.run.progress import RunProgress, duration

    if no_measure and not plan_only:
        raise InputError("--no-measure applies to --plan only; add --plan, or drop it")
    # the flags are checked by the rules of the config keys they override
    cfg = load_config(config).with_overrides(flops_budget=flops_budget, search=search,
                                             executor=executor_kind, workers=workers,
                                             run_dir=run_dir)
    if plan_only:
        from lensllm.run.plan import make_plan

        with contextlib.redirect_stdout(sys.stderr):
            plan = make_plan(cfg, measure=not no_measure, verify=verify,
                             progress=RunProgress(quiet=quiet))
        _echo(json.dumps(plan.to_dict(), indent=1) if fmt == "json" else plan.to_text())
        return
    # stdout carries only the result: whatever the run prints (Ray's notices of dead
    # workers, library chatter) goes to stderr, so --format json stays parseable.
    progress = RunProgress(quiet=quiet)
    # The lock covers the report too: a run that waited must not overwrite it midway.
    with contextlib.redirect_stdout(sys.stderr), \
            RunLock(cfg.run_dir, wait=wait, notify=progress.message):
        outcome = run(cfg, verify=verify, progress=progress, force=force, locked=True)
        report = write_report(outcome)
    _warn(outcome.selection.warnings)  # the report lists them too
    if fmt == "json":
        _echo(json.dumps(summary_json(outcome, report), indent=1, default=str))
        return
    _echo(selection_table(outcome.selection))
    from lensllm.report.ledger import decision_flops, reference, saved_text

    ledger = outcome.ledger
    _echo(f"compute: {100 * decision_flops(ledger) / reference(ledger)[0]:.1f} % of "
          f"fine-tuning every candidate at the target ({saved_text(ledger)}); "
          f"{ledger['runs']} runs")
    if outcome.failures:
        _echo(f"failed jobs: {len(outcome.failures)} (see the report)")
    if outcome.verify is not None:
        from lensllm.report.bench import evaluation_tables

        _echo("\nverification on these candidates:\n" + evaluation_tables(outcome.verify))
        for method, why in outcome.not_scored.items():
            _echo(f"not scored: {method} ({why})")
    _echo(f"report: {report}  ({duration(outcome.wall_seconds)})")


@app.group()
def zoo() -> None:
    """The offline candidate zoo (tiny GPT-2 models pretrained here on prose)."""


@zoo.command("build")
@click.option("--size", type=click.Choice(["micro", "demo", "small", "hub", "hub-pilot"]),
              default="demo", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path),
              default=Path("~/.cache/lensllm"), show_default=True)
def zoo_build(size: str, seed: int, cache_dir: Path) -> None:
    """Train the tokenizer and pretrain the zoo's candidates (cached, deterministic).

    The hub sizes fetch their Debian corpora into the cache (apt-get download) and
    write the hub's four downstream tasks."""
    from lensllm.zoo.build import build_task, build_zoo
    from lensllm.zoo.hub import HUB_TASKS, build_hub_task

    manifest = build_zoo(cache_dir.expanduser(), size, seed,
                         progress=lambda m: sys.stderr.write(m + "\n"))
    if size.startswith("hub"):
        task = ", ".join(str(build_hub_task(cache_dir.expanduser(), name, seed=seed))
                         for name in HUB_TASKS)
    else:
        task = build_task(cache_dir.expanduser(), seed=seed)
    rows = [[r.name, f"{r.params:,}", r.pretrain_steps, f"{r.heldout_pretrain_loss:.3f}",
             str(r.path)] for r in manifest.candidates]
    from lensllm.report.tables import text_table

    _echo(text_table(["candidate", "params", "pretrain steps", "held-out loss", "path"],
                     rows, title=f"zoo {manifest.size} (seed {seed})"))
    _echo(f"task: {task}")


@app.group()
def suite() -> None:
    """Suites of measured fine-tuning curves, built by lensllm's own pipeline."""


@suite.command("build")
@click.option("--size", type=click.Choice(["hub", "hub-pilot"]), default="hub",
              show_default=True, help="Zoo size whose candidates are measured.")
@click.option("--tasks", default=None, help="Comma-separated hub tasks (default: all).")
@click.option("--candidates", default=None, help="Comma-separated candidates (default: all).")
@click.option("--n0", type=int, default=16, show_default=True,
              help="Smallest size; sizes double from it up to the budget.")
@click.option("--budget", type=int, default=2048, show_default=True,
              help="Largest grid size; the target is fine-tuned by the verification.")
@click.option("--target", type=int, default=4096, show_default=True)
@click.option("--max-steps", type=int, default=256, show_default=True)
@click.option("--max-epochs", type=int, default=3, show_default=True)
@click.option("--max-length", type=int, default=64, show_default=True)
@click.option("--learning-rate", type=float, default=1e-3, show_default=True,
              help="Fine-tuning rate of every candidate.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Jobs at once (one thread each).")
@click.option("--hessian/--no-hessian", default=False, show_default=True,
              help="Also measure Hessian traces and distances.")
@click.option("--hessian-probe", type=int, default=16, show_default=True,
              help="Probe examples of the Hessian measurements.")
@click.option("--hessian-samples", type=int, default=8, show_default=True,
              help="Hutchinson samples (Hessian-vector products) per measurement.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path),
              default=Path("~/.cache/lensllm"), show_default=True)
@click.option("--suite-dir", type=click.Path(path_type=Path), default=Path("suite-runs"),
              show_default=True, help="Run directories (the resumable stores).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Export folder (default: the package's data/suites/zoo).")
def suite_build(size: str, tasks: str | None, candidates: str | None, n0: int, budget: int,
                target: int, max_steps: int, max_epochs: int, max_length: int,
                learning_rate: float, workers: int,
                hessian: bool, hessian_probe: int, hessian_samples: int, seed: int,
                cache_dir: Path, suite_dir: Path, out: Path | None) -> None:
    """Build (or resume) the zoo suite: curves with NTK spectra per (candidate, task)."""
    from lensllm.run.suite import DEFAULT_TRAINING, SuiteSettings, build_suite

    def split(text: str | None) -> tuple[str, ...]:
        return tuple(part.strip() for part in (text or "").split(",") if part.strip())

    training = {**DEFAULT_TRAINING, "max_steps": max_steps, "max_epochs": max_epochs,
                "max_length": max_length}
    settings = SuiteSettings(
        cache_dir=cache_dir.expanduser(), suite_dir=suite_dir.resolve(),
        out_dir=(out or Path(__file__).parent / "data" / "suites" / "zoo").resolve(),
        size=size, seed=seed, tasks=split(tasks), candidates=split(candidates), n0=n0,
        budget=budget, target=target, workers=workers, training=training,
        learning_rate=learning_rate,
        hessian={"enabled": hessian, "probe_size": hessian_probe,
                 "samples": hessian_samples})
    summary = build_suite(settings, progress=lambda m: sys.stderr.write(m + "\n"))
    for task, info in summary["tasks"].items():
        _echo(f"{task}: {info['seconds']:.0f} s, {info['failures']} failure(s)")
    _echo(f"suite written to {settings.out_dir}")


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the app, turning every expected failure into one line + exit 2."""
    try:
        return app.main(args=argv, prog_name="lensllm", standalone_mode=False)
    except LensLLMError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except click.UsageError as exc:
        message = exc.format_message().replace("\n", " ")
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)
    except click.exceptions.Abort:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
