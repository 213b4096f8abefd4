"""Text, CSV and JSON renderings of evaluations, rankings and single fits."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lensllm.core.curves import CurveSet
from lensllm.core.evaluation import Cell, Evaluation
from lensllm.core.robustness import AdaptiveRow, RobustnessReport
from lensllm.core.selectors import Selection
from lensllm.core.selectors.lawfit import fit_points
from lensllm.core.tuning import HeldOutSetting
from lensllm.errors import InputError
from lensllm.report.decision import decide
from lensllm.report.tables import fmt, markdown_table, text_table

METRICS = (("pearcorr", "PearCorr"), ("relacc", "RelAcc"))


def _ratios(evaluation: Evaluation, task: str) -> list[tuple[int, str]]:
    seen = {(c.budget, c.ratio) for c in evaluation.cells if c.task == task}
    return sorted(seen, key=lambda br: -br[0])


def evaluation_tables(evaluation: Evaluation) -> str:
    """The papers' layout: per metric and task, rows = budget ratio, columns = method;
    then every method's mean over all its cells."""
    methods = evaluation.methods
    blocks = []
    for key, label in METRICS:
        for task in evaluation.tasks:
            rows = []
            for budget, ratio in _ratios(evaluation, task):
                row: list[Any] = [ratio]
                for method in methods:
                    row.append(evaluation.get(task, method, budget).__getattribute__(key))
                rows.append(row)
            blocks.append(text_table(["ratio", *methods], rows,
                                     title=f"{label} x100 -- {task}"))
    n_cells = {m: sum(c.method == m for c in evaluation.cells) for m in methods}
    summary = [[m, evaluation.mean(m, "pearcorr"), evaluation.mean(m, "relacc"),
                _mean_or_none(evaluation, m, "mape"), n_cells[m]] for m in methods]
    blocks.append(text_table(["method", "PearCorr", "RelAcc", "MAPE %", "cells"], summary,
                             title="mean over cells"))
    return "\n\n".join(blocks)


def _mean_or_none(evaluation: Evaluation, method: str, metric: str) -> float | None:
    value = evaluation.mean(method, metric)
    return None if math.isnan(value) else value


def _mean(values: list[float]) -> float:
    """The mean of the values that are numbers (NaN when none is)."""
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else math.nan


def calibration_table(cells: list) -> str:
    """Coverage x100 of the stated intervals: rows = ratio, columns = task (+ mean)."""
    tasks = list(dict.fromkeys(c.task for c in cells))
    methods = list(dict.fromkeys(c.method for c in cells))
    blocks = []
    for method in methods:
        mine = [c for c in cells if c.method == method]
        ratios = list(dict.fromkeys(c.ratio for c in sorted(mine, key=lambda c: -c.budget)))
        rows = []
        for ratio in ratios:
            row = [c.coverage for t in tasks for c in mine if c.task == t and c.ratio == ratio]
            rows.append([ratio, *row, _mean(row)])
        per_task = [_mean([c.coverage for c in mine if c.task == t]) for t in tasks]
        rows.append(["mean", *per_task, _mean([c.coverage for c in mine])])
        level = 100 * mine[0].level
        # "-": no interval stated (too few sizes to back-test one), not 0 % coverage
        rows = [[r[0], *(None if isinstance(v, float) and math.isnan(v) else v
                         for v in r[1:])] for r in rows]
        stated = [c for c in mine if not math.isnan(c.coverage)]
        text = text_table(["ratio", *tasks, "all"], rows,
                          title=f"coverage of the {level:.0f} % interval (x100) -- {method}")
        if stated:
            worst = min(stated, key=lambda c: c.coverage)
            text += f"\nworst cell: {worst.task} {worst.ratio} {worst.coverage:.1f}"
        missing = list(dict.fromkeys(c.ratio for c in mine if math.isnan(c.coverage)))
        if missing:
            text += (f"\nno interval at {', '.join(missing)}: too few sizes under the budget "
                     "to back-test one")
        blocks.append(text)
    return "\n\n".join(blocks)


def adaptive_table(rows: list[dict[str, Any]], ats_rows: list[dict[str, Any]]) -> str:
    """RelAcc against the FLOPs share: the adaptive search per budget, AtS per ratio."""
    tasks = list(rows[0]["relacc"]) if rows else []
    body = []
    for r in rows:
        body.append([f"adaptive <= {100 * r['budget']:.2g} %",
                     *[100 * r["flops"][t] for t in tasks], float(np.mean(list(
                         r["flops"].values()))) * 100,
                     *[r["relacc"][t] for t in tasks], float(np.mean(list(
                         r["relacc"].values())))])
    for r in ats_rows:
        body.append([r.get("label", f"ats at {r['ratio']}"), *[100 * r["flops"]] * len(tasks),
                     100 * r["flops"],
                     *[r["relacc"][t] for t in tasks],
                     float(np.mean(list(r["relacc"].values())))])
    headers = ["search", *[f"FLOPs% {t}" for t in tasks], "FLOPs% mean",
               *[f"RelAcc {t}" for t in tasks], "RelAcc mean"]
    return text_table(headers, body, digits=2,
                      title="RelAcc x100 against the share of full fine-tuning FLOPs")


def evaluation_csv(evaluation: Evaluation) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(Cell.__annotations__), lineterminator="\n")
    writer.writeheader()
    for record in evaluation.to_records():
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    return buf.getvalue()


def plot_evaluation(evaluation: Evaluation, folder: Path) -> list[Path]:
    from lensllm.report.plots import plot_metric_by_ratio

    written = []
    for key, label in METRICS:
        for task in evaluation.tasks:
            ratios = _ratios(evaluation, task)
            series = {m: [getattr(evaluation.get(task, m, b), key) for b, _ in ratios]
                      for m in evaluation.methods}
            written.append(plot_metric_by_ratio(Path(folder) / f"{task}-{key}.png", task,
                                                label, [r for _, r in ratios], series))
    return written


def selection_json(selection: Selection) -> dict[str, Any]:
    """``lower`` / ``upper`` bound the ``interval_level`` interval (null: none)."""
    decision = decide(selection)
    level = selection.details.get("level") if selection.lower is not None else None
    return {
        "method": selection.method, "task": selection.task, "budget": selection.budget,
        "target": selection.target, "chosen": selection.chosen,
        "interval_level": level, "decision": decision.kind,
        "contenders": decision.contenders, "decision_text": decision.text(),
        "warnings": list(selection.warnings), "ranking": selection.to_records(),
    }


def interval_headers(selection: Selection) -> dict[str, str]:
    """Column titles that say what the bounds are: ``90 % low`` / ``90 % high``."""
    level = round(100 * selection.details.get("level", 0.9))
    return {"lower": f"{level} % low", "upper": f"{level} % high", "p_best": "P(best)"}


def selection_table(selection: Selection) -> str:
    records = selection.to_records()
    columns = ["rank", "model", "score"]
    names = {"score": "score", **interval_headers(selection)}
    if selection.predicted is not None:
        columns = ["rank", "model", "predicted"]
        names["predicted"] = f"predicted loss at {selection.target:,}"
    for extra in ("lower", "upper", "p_best"):
        if records and extra in records[0]:
            columns.append(extra)
    rows = [[r[c] for c in columns] for r in records]
    headers = [names.get(c, c) for c in columns]
    title = (f"{selection.task}: {selection.method}, budget {selection.budget:,}, "
             f"target {selection.target:,}")
    return (text_table(headers, rows, digits=4, title=title)
            + f"\n\n{decide(selection).text()}\nchosen: {selection.chosen}")


def fit_report(curves: CurveSet, model: str, law_name: str, budget: int | None,
               target: int | None, mode: str, plot: Path | None) -> dict[str, Any]:
    """Fit one law to one curve; text + JSON summaries, optional plot."""
    from lensllm.core.laws import LensLLMLaw
    from lensllm.core.selectors.lawfit import LAW_FITS

    if law_name not in LAW_FITS:
        raise InputError(f"unknown law {law_name!r}; choose from {', '.join(LAW_FITS)}")
    curve = curves[model]
    seen = curve.within(budget) if budget is not None else curve
    if len(seen) < 3:
        raise InputError(
            f"{curves.task}: model {model!r} has {len(seen)} measured size(s)"
            + (f" <= budget {budget}" if budget is not None else "")
            + "; fitting a law needs at least 3"
        )
    # The law-fit method decides the law, its loss and the fit, exactly as when it selects.
    method = LAW_FITS[law_name](**({"mode": mode} if law_name == "lensllm" else {}))
    largest = int(seen.sizes.max())
    if target is None:
        beyond = curve.sizes[curve.sizes > largest]
        target = int(beyond.max()) if beyond.size else 8 * largest
    law, result = method.fit_curve(seen, float(target))
    note = None
    if law_name == "lensllm" and not isinstance(law, LensLLMLaw):
        note = ("no NTK data for this model: F is a free parameter, so the LensLLM law "
                "is the rectified law (F = D_l)")
    elif isinstance(law, LensLLMLaw) and law.mode != mode:
        note = (f"the NTK data has no step count t: t is fitted (mode {law.mode}, not "
                f"{mode})")
    sizes = fit_points(seen, law)[0]
    predicted = float(result.predict(target))
    true = curve.loss_at(target)
    params = {k: float(v) for k, v in result.params.items()}
    band, bounds, level, why_none = _fit_interval(method, curves, model, result.predict,
                                                  budget if budget is not None else largest,
                                                  target)
    payload = {
        "model": model, "law": law.name, "law_requested": law_name, "note": note,
        "budget": budget, "target": target,
        "params": params, "predicted": predicted, "true": true,
        "lower": bounds[0], "upper": bounds[1], "interval_level": level,
        "rmse_log": result.rmse_log, "condition": result.condition,
        "starts_agree": result.starts_agree, "success": result.success,
        "points": int(sizes.size),
    }
    asked = f" (asked for {law_name})" if law.name != law_name else ""
    lines = [f"{curves.task}: {model} -- {law.name} law{asked} on {sizes.size} points"
             + (f" (sizes <= {budget:,})" if budget is not None else "")]
    if note:
        lines.append(f"note: {note}")
    lines += [f"  {k:>4} = {fmt(v, 6) if abs(v) < 1e6 else f'{v:.4g}'}" for k, v in params.items()]
    lines.append(f"  fit RMSE (log loss) = {result.rmse_log:.5f}; Jacobian condition = "
                 f"{result.condition:.3g}; starts agree: {'yes' if result.starts_agree else 'NO'}")
    lines.append(f"  predicted loss at {target:,}: {predicted:.4f}"
                 + (f" (measured {true:.4f}, error {100 * (predicted - true) / true:+.1f} %)"
                    if true is not None else ""))
    if bounds[0] is not None:
        lines.append(f"  {level * 100:.0f} % interval at {target:,}: {bounds[0]:.4f} ... "
                     f"{bounds[1]:.4f} (back-tested on the {len(curves)} models of the file)")
    else:
        lines.append(f"  no interval: {why_none}")
    if plot is not None:
        from lensllm.report.plots import plot_curve_fit

        plot_curve_fit(plot, curve, result.predict, budget, target, true_at_target=true,
                       title=f"{model} ({law.name})", label=f"{law.name} fit",
                       band_fn=band, band_label=f"{level * 100:.0f} % interval"
                       if level else "interval")
        lines.append(f"  plot: {plot}")
    return {"text": "\n".join(lines), "json": payload, "fit": result}


def _fit_interval(method, curves: CurveSet, model: str, predict, budget: int, target: int
                  ) -> tuple[Any, tuple[float | None, float | None], float | None, str]:
    """The interval of one fit, back-tested as ``select`` does, on every model of the
    file: (band function for the plot, bounds at the target, level, why there is none)."""
    from lensllm.report.plots import extrapolation_band

    try:
        selection = method.select(curves, budget, target, uncertainty=True)
    except InputError as exc:
        return None, (None, None), None, f"the other models cannot be back-tested ({exc})"
    error_model, level = selection.details.get("error_model"), selection.details.get("level")
    if error_model is None or not math.isfinite(error_model.half_width(1.0)):
        return None, (None, None), None, "too few sizes to back-test the law"
    band = extrapolation_band(predict, error_model, budget, level)
    low, high = band(np.array([float(target)]))
    return band, (float(low[0]), float(high[0])), level, ""


__all__ = ["evaluation_csv", "evaluation_tables", "fit_report", "plot_evaluation",
           "selection_json", "selection_table"]


def robustness_table(report: RobustnessReport) -> str:
    """The robustness protocol: one row per variant and method (the reference left out)."""
    lines = [f"{'variant':16s} {'method':22s} {'cells':>5s} {'PearCorr':>8s} "
             f"{'RelAcc':>7s} | {'ref P':>6s} {'ref R':>6s} | worst vs {report.reference}: "
             "PearCorr (cell), RelAcc (cell)"]
    others = any(s.method != report.reference for s in report.summaries)
    for s in report.summaries:
        if s.method == report.reference and others:
            continue
        lines.append(
            f"{s.variant:16s} {s.method:22s} {s.cells:5d} {s.pearcorr:8.1f} {s.relacc:7.1f} | "
            f"{s.ref_pearcorr:6.1f} {s.ref_relacc:6.1f} | {s.worst_pearcorr:+6.1f} "
            f"({s.worst_pearcorr_cell}), {s.worst_relacc:+6.1f} ({s.worst_relacc_cell})")
    lines += [f"skipped: {why}" for why in report.skipped]
    return "\n".join(lines)


def adaptive_sweep_table(rows: Sequence[AdaptiveRow]) -> str:
    """The adaptive search per variant and FLOPs budget, next to the fixed baselines."""
    lines = [f"{'variant':12s} {'budget':>7s} {'used':>6s} {'RelAcc':>6s} {'worst task':>18s} | "
             f"{'AtS >= FLOPs':>12s} {'(FLOPs)':>7s} {'lowest@s':>8s}"]
    for r in rows:
        lines.append(f"{r.variant:12s} {100 * r.budget:6.2f}% {100 * r.flops:5.2f}% "
                     f"{r.relacc:6.1f} {r.worst_task:>11s} {r.worst_relacc:6.1f} | "
                     f"{r.ats_relacc:12.1f} {100 * r.ats_flops:6.2f}% {r.lowest_relacc:8.1f}")
    return "\n".join(lines)


def loto_table(rows: Sequence[HeldOutSetting], markdown: bool = False) -> str:
    """Leave-one-task-out of the tuned settings: one block per setting, one row per
    held-out task (its value chosen on the other tasks), and the mean over them."""
    blocks = []
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [r for r in rows if r.setting == setting]
        keys = list(mine[0].metrics)
        body: list[list[Any]] = [[r.task, r.chosen, *[r.metrics[k] for k in keys], r.worst]
                                 for r in mine]
        body.append(["mean", "", *[float(np.nanmean([r.metrics[k] for r in mine]))
                                   for k in keys], ""])
        headers = ["held out", "chosen without it", *keys, "worst cell"]
        title = f"leave-one-task-out: {setting} (in-sample choice {mine[0].in_sample})"
        blocks.append(f"{title}\n\n{markdown_table(headers, body)}" if markdown
                      else text_table(headers, body, title=title))
    return "\n\n".join(blocks)
