"""The report of a ``lensllm run``: Markdown + PNG, and one self-contained HTML file.

Both say the same things: the ranking with predicted loss at the target, its interval
and P(best); one log-log plot per candidate (points, fit, extrapolation, target line);
the compute ledger against fine-tuning every candidate at the target; fit diagnostics;
failed jobs; the verification table when asked; and the exact config.  The HTML page
inlines its PNGs as data URIs and loads nothing from the network.

The report is made from a run's :class:`~lensllm.run.pipeline.RunOutcome` only; the run
itself writes its data (the store, curves.json and curves.csv).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lensllm.fileio import short_hash
from lensllm.report.bench import interval_headers
from lensllm.report.decision import decide, interval_overlaps
from lensllm.report.ledger import ledger_rows, reference
from lensllm.report.tables import fmt, markdown_table

if TYPE_CHECKING:
    from lensllm.core.curves import Curve, CurveSet
    from lensllm.core.selectors import Selection
    from lensllm.run.pipeline import RunOutcome

SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
#: table cells that are numbers (right-aligned; text reads better left-aligned)
NUMBER = re.compile(r"^[-+]?[\d,.]+(e[-+]?\d+)?( %)?$|^-$")
#: the decision's kind, as the summary line says it
CONFIDENCE = {"clear": "clear winner", "near-tie": "near tie, see Decision",
              "tie": "a tie, see Decision", "not-enough-data": "not enough data to be sure",
              "single": "the only candidate", "ranking-only": "no confidence stated"}


def plot_name(name: str) -> str:
    """A file name for a candidate's plot: readable (an ASCII slug of the name) and
    unique (a short hash of the whole name), so names without ASCII letters
    (``模型-α``, ``模板-β``) do not collide, and the same name always maps to it."""
    slug = SLUG.sub("_", name).strip("_")[:40]
    return f"{slug + '-' if slug else ''}{short_hash(name, 8)}.png"


def _ranking_rows(selection: Selection) -> tuple[list[str], list[list[Any]]]:
    names = interval_headers(selection)
    extra = [k for k in names if getattr(selection, k) is not None]
    headers = ["rank", "candidate", f"predicted loss at {selection.target:,}"]
    headers += [names[k] for k in extra]
    overlaps = interval_overlaps(selection)
    if selection.lower is not None:
        headers.append("interval vs the leader's")
    rows = []
    for rec in selection.to_records():
        row = [rec["rank"], rec["model"], rec.get("predicted", rec["score"])]
        row += [rec[k] for k in extra]
        if selection.lower is not None:
            i = selection.models.index(rec["model"])
            row.append("leader" if rec["rank"] == 1 else
                       "overlaps" if overlaps[i] else "apart")
        rows.append(row)
    return headers, rows


def residuals(curve: Curve, predict: Any) -> np.ndarray:
    """log(observed) - log(fitted) at each measured size of ``curve``."""
    fitted = np.asarray(predict(curve.sizes.astype(float)), dtype=float)
    return np.log(curve.losses) - np.log(fitted)


def _diagnostics(curves: CurveSet, selection: Selection
                 ) -> tuple[list[str], list[list[Any]]]:
    fits = selection.details.get("fits")
    predict = selection.details.get("predict")
    headers = ["candidate", "sizes measured", "largest", "zero-shot loss", "params"]
    if predict is not None:
        headers += ["fit RMSE (log)", "worst residual (log)", "residuals (log) by size"]
    if fits:
        headers += ["Jacobian cond.", "starts agree"]
    rows = []
    for i, curve in enumerate(curves):
        row = [curve.model, len(curve), int(curve.sizes.max()) if len(curve) else "-",
               curve.zero_shot, f"{curve.params:,.0f}" if curve.params else "-"]
        if predict is not None:
            res = residuals(curve, lambda n, i=i: predict(i, n)) if len(curve) else None
            if res is None or not np.isfinite(res).all():
                row += ["-", "-", "-"]
            else:
                worst = int(np.argmax(np.abs(res)))
                row += [f"{float(np.sqrt(np.mean(res**2))):.4f}",
                        f"{res[worst]:+.4f} at {int(curve.sizes[worst]):,}",
                        " ".join(f"{int(n)}:{r:+.3f}" for n, r in zip(curve.sizes, res,
                                                                     strict=True))]
        if fits:
            f = fits[i]
            row += [f"{f.condition:.2e}", "yes" if f.starts_agree else "NO"]
        rows.append(row)
    return headers, rows


def _bands(selection: Selection) -> list[Any]:
    """Per candidate: sizes -> the interval band of its extrapolation (None without
    back-tested intervals or predictions)."""
    from lensllm.report.plots import extrapolation_band

    predict, model = selection.details.get("predict"), selection.details.get("error_model")
    if predict is None or model is None or not math.isfinite(model.half_width(1.0)):
        return [None] * len(selection.models)
    level = selection.details.get("level", 0.9)
    return [extrapolation_band(lambda n, i=i: predict(i, n), model, selection.budget, level)
            for i in range(len(selection.models))]


def _plots(run_dir: Path, curves: CurveSet, selection: Selection,
           true_at_target: dict[str, float]) -> list[Path]:
    """The combined plot (every candidate on one axis) first, then one per candidate."""
    from lensllm.report.plots import plot_all_fits, plot_curve_fit

    predict = selection.details.get("predict")
    bands = _bands(selection)
    level = f"{round(100 * selection.details.get('level', 0.9))} % interval"
    predicts = [(lambda n, i=i: predict(i, n)) if predict is not None else None
                for i in range(len(curves))]
    out = [plot_all_fits(run_dir / "plots" / "all-candidates.png", list(curves), predicts,
                         bands, selection.budget, selection.target,
                         f"all candidates ({selection.method})", true_at_target,
                         band_label=level)]
    for i, curve in enumerate(curves):
        band = None
        if selection.lower is not None and np.isfinite(selection.lower[i]):
            band = (float(selection.lower[i]), float(selection.upper[i]))
            if not all(math.isfinite(b) for b in band):
                band = None  # no interval (too few sizes to back-test): nothing to draw
        out.append(plot_curve_fit(run_dir / "plots" / plot_name(curve.model), curve,
                                  predicts[i], selection.budget, selection.target, band=band,
                                  true_at_target=true_at_target.get(curve.model),
                                  title=f"{curve.model} ({selection.method})",
                                  label=f"{selection.method} fit", band_fn=bands[i],
                                  band_label=level))
    return out


HESSIAN_HEADERS = ["candidate", "size", "Hessian trace", "Hessian-weighted distance",
                   "train loss", "gap (test - train)"]


def _hessian(run_dir: Path, outcome: RunOutcome) -> tuple[str, list[tuple[Path, str]]]:
    """The Hessian section (a table, and per candidate with fine-tuning measurements a
    plot of trace, distance and gap against the size); empty without measurements."""
    from lensllm.report.plots import plot_hessian

    rows: list[list[Any]] = []
    plots = []
    for name, data in outcome.hessian.items():
        pretrained = (data.get("pretrained") or {}).get("total_trace")
        runs = {int(n): r for n, r in (data.get("runs") or {}).items()}
        sizes = sorted(runs)
        rows.append([name, "pretrained", pretrained, "-", "-", "-"])
        rows += [[name, f"{n:,}", runs[n]["total_trace"], runs[n].get("distance_total"),
                  runs[n].get("train_loss"), runs[n].get("gap")] for n in sizes]
        if sizes:
            path = plot_hessian(
                run_dir / "plots" / f"hessian-{plot_name(name)}", name, sizes,
                [runs[n]["total_trace"] for n in sizes],
                [runs[n].get("distance_total") for n in sizes],
                [runs[n].get("gap") for n in sizes], pretrained, outcome.config.target)
            plots.append((path, f"{name}: Hessian trace, distance and gap"))
    if not rows:
        return "", []
    md = (markdown_table(HESSIAN_HEADERS, rows, digits=4)
          + "\n\nTrace: Hutchinson estimate of the Hessian trace of the probe loss (sum "
          "over layers); distance: (θ-θ0)ᵀ H (θ-θ0) from the pretrained weights θ0, at the "
          "fine-tuned weights; gap: test loss minus the loss on the run's own training "
          "subset.")
    return md, plots


def _figure(path: Path, caption: str, wide: bool = False) -> str:
    """An inlined PNG with its caption (the page loads nothing from anywhere)."""
    return (f'<figure{" class=wide" if wide else ""}><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_report(outcome: RunOutcome) -> Path:
    """Write report.md, report.html and plots/ into the run directory; return the path
    of report.md.

    With a --verify run's full curves (``outcome.verified``), the true loss at the
    target is drawn and listed."""
    config, curves, selection = outcome.config, outcome.curves, outcome.selection
    halving, verification, verified = outcome.halving, outcome.verify, outcome.verified
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    truth = {}
    if verified is not None:
        truth = {c.model: c.loss_at(config.target) for c in verified
                 if c.loss_at(config.target) is not None}
    plots = _plots(run_dir, curves.within(selection.budget), selection, truth)

    r_headers, r_rows = _ranking_rows(selection)
    d_headers, d_rows = _diagnostics(curves.within(selection.budget), selection)
    sections: list[tuple[str, str, str]] = []  # (title, markdown, html)

    def add(title: str, md: str, body: str | None = None, table_id: str | None = None) -> None:
        sections.append((title, md, body if body is not None else _md_table_html(md, table_id)))

    ledger = outcome.ledger
    decision = decide(selection, {c.model: float(c.params) for c in curves if c.params},
                      ledger.get("tokens_per_example"), reference(ledger)[0])
    intro = (f"Task **{outcome.task}**, {len(curves)} candidates, method "
             f"**{selection.method}**, budget {selection.budget:,} examples, target "
             f"{selection.target:,}. **Chosen: {selection.chosen}** "
             f"({CONFIDENCE[decision.kind]}). Wall time {outcome.wall_seconds:.0f} s.")
    add("Decision", f"**{decision.headline}** {decision.next_step}".strip()
        + "".join(f"\n\nWarning: {w}" for w in selection.warnings))
    ranking = markdown_table(r_headers, r_rows, digits=4)
    if decision.overlapping and selection.p_best is not None:
        ranking += (f"\n\nThe intervals of {', '.join(decision.overlapping)} overlap the "
                    "leader's. An interval holds the whole prediction error, including an "
                    "error that moves every candidate the same way; P(best) counts only the "
                    "errors relative to the other candidates, so it can be near 0 despite an "
                    "overlap.")
    add("Ranking", ranking, table_id="ranking")
    add("Compute", markdown_table(["part", "FLOPs", "share of the reference", "counted as"],
                                  ledger_rows(ledger)) + _measured_note(outcome))
    if halving is not None:
        rows = [[r.size, len(r.survivors), r.leader, f"{r.leader_p_best:.2f}",
                 f"{100 * r.flops_fraction:.2f} %"] for r in halving.rungs]
        add("Adaptive search",
            markdown_table(["largest size", "survivors", "leader", "leader P(best)",
                            "FLOPs share so far"], rows)
            + f"\n\nStopped: {halving.stop_reason}.")
    add("Fit diagnostics", markdown_table(d_headers, d_rows, digits=4))
    if verification is not None:
        rows = [[c.method, c.ratio, c.budget, fmt(c.pearcorr), fmt(c.relacc), fmt(c.mape)]
                for c in verification.cells]
        add("Verification (every candidate fine-tuned at the target)",
            markdown_table(["method", "ratio", "budget", "PearCorr", "RelAcc", "MAPE %"],
                           rows)
            + "\n\nTrue loss at the target: "
            + ", ".join(f"{m} {v:.4f}" for m, v in sorted(truth.items(), key=lambda kv: kv[1]))
            + "".join(f"\n\nNot scored: {m} ({why})."
                      for m, why in outcome.not_scored.items()))
    hessian_md, hessian_plots = _hessian(run_dir, outcome)
    if hessian_md:
        add("Hessian", hessian_md + "".join(f"\n\n![{c}](plots/{p.name})"
                                           for p, c in hessian_plots),
            _md_table_html(hessian_md)
            + "".join(_figure(p, c, wide=True) for p, c in hessian_plots))
    if outcome.failures:
        add("Failures", markdown_table(["job", "error", "attempts"],
                                       [[f["job"], f["error"], f["attempts"]]
                                        for f in outcome.failures]))
    else:
        add("Failures", "None.", "<p>None.</p>")
    config_text = json.dumps(config.raw, indent=2, default=str)
    add("Config", f"```json\n{config_text}\n```", f"<pre>{html.escape(config_text)}</pre>")

    md = [f"# lensllm run: {config.name}", "", intro, ""]
    for title, body, _ in sections:
        md += [f"## {title}", "", body, ""]
    captions = ["all candidates: fits, extrapolations and intervals",
                *curves.within(selection.budget).models]
    md += ["## Curves", ""] + [f"![{c}](plots/{p.name})"
                               for p, c in zip(plots, captions, strict=True)]
    md_path = run_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    images = "".join(_figure(p, c, wide=k == 0)
                     for k, (p, c) in enumerate(zip(plots, captions, strict=True)))
    body = "".join(f"<h2>{html.escape(t)}</h2>{h}" for t, _, h in sections)
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>lensllm run: {html.escape(config.name)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:.25em .6em;text-align:right}td.t,th{text-align:left}"
        "figure{display:inline-block;margin:.5em}img{max-width:520px}"
        ".wide img{max-width:800px}pre{background:#f5f5f5;"
        "padding:1em;overflow:auto}</style></head><body>"
        f"<h1>lensllm run: {html.escape(config.name)}</h1>"
        f"<p id=\"summary\">{_inline_md(intro)}</p>{body}<h2>Curves</h2>{images}"
        "</body></html>")
    (run_dir / "report.html").write_text(page)
    return md_path


def _measured_note(outcome: RunOutcome) -> str:
    """One paragraph per optional measurement: made or not, and why."""
    what = {"ntk": "NTK spectra", "hessian": "Hessian traces"}
    return "".join(f"\n\n{what.get(kind, kind)}: {'measured' if made else 'not measured'} "
                   f"({why})." for kind, (made, why) in outcome.measurements.items())


def _inline_md(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def _md_table_html(md: str, table_id: str | None = None) -> str:
    """Render the Markdown tables / paragraphs this module writes as HTML."""
    out, rows = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            rows.append(cells)
            continue
        if rows:
            head, *rest = rows
            out.append(f'<table id="{table_id}">' if table_id and not out else "<table>")
            out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
            for r in rest:
                out.append("<tr>" + "".join(
                    f"<td>{html.escape(c)}</td>" if NUMBER.match(c)
                    else f'<td class="t">{html.escape(c)}</td>' for c in r) + "</tr>")
            out.append("</table>")
            rows = []
        if line.strip():
            out.append(f"<p>{_inline_md(line)}</p>")
    return "".join(out)

