"""A decision a person can trust and read (issue 12, rows 3, 6, 7, 8 and 10): defaults
that fit the user's file, warnings on degenerate rankings, the decision in words,
unique plot names, labelled intervals and readable plots."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import lensllm
from lensllm.cli import main
from lensllm.core.selectors import Selection
from lensllm.errors import RankingWarning
from lensllm.report.decision import decide
from lensllm.report.ledger import ledger_rows, saved_text
from lensllm.report.run_report import plot_name

SIZES = (100, 200, 400, 800, 1600, 3200)
# (B, D_l, beta, E): a spread of curves that never cross
LAWS = {"a": (40.0, 50.0, 0.45, 1.2), "b": (45.0, 60.0, 0.40, 1.5),
        "c": (60.0, 80.0, 0.35, 1.9)}


def _loss(law: tuple[float, float, float, float], n: float) -> float:
    b, d_l, beta, e = law
    return b / (d_l + n**beta) + e


def _wide(path: Path, laws: dict, sizes=SIZES, zero_shot: bool = True) -> Path:
    """A README-conformant wide file: ``model``, one column per size, no ``size``."""
    cols = ([0] if zero_shot else []) + list(sizes)
    lines = ["model," + ",".join(map(str, cols))]
    for name, law in laws.items():
        values = law if callable(law) else (lambda n, law=law: _loss(law, n))
        lines.append(name + "," + ",".join(f"{values(max(n, 1)):.6f}" for n in cols))
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- row 3: defaults

def test_evaluate_defaults_adapt_to_a_file_without_sizes_column(tmp_path, capsys):
    path = _wide(tmp_path / "mine.csv", LAWS)
    code, out, err = _cli(capsys, "evaluate", str(path), "--target", "3200", "--format",
                          "json")
    assert code == 0, err
    assert err == ("note: skipped model-size: mine: model 'a' has no parameter count; the "
                   "model-size method needs it (column 'size' in wide files, 'params' in "
                   "long files)\n")
    cells = json.loads(out)
    # budgets from the file's own sizes: target/2, /4, /8 leave every model 3 sizes
    assert sorted({c["budget"] for c in cells}) == [400, 800, 1600]
    assert {c["method"] for c in cells} == {"zeroshot", "subset-loss", "vanilla",
                                            "rectified", "ats", "lensllm"}


def test_given_budgets_still_skip_default_methods_the_file_cannot_serve(tmp_path, capsys):
    path = _wide(tmp_path / "mine.csv", LAWS)
    code, out, err = _cli(capsys, "evaluate", str(path), "--target", "3200", "--budgets",
                          "800,400", "--format", "json")
    assert code == 0, err
    assert err == ("note: skipped model-size: mine: model 'a' has no parameter count; the "
                   "model-size method needs it (column 'size' in wide files, 'params' in "
                   "long files)\n")
    assert sorted({c["budget"] for c in json.loads(out)}) == [400, 800]


def test_a_method_the_user_names_is_never_skipped(tmp_path, capsys):
    path = _wide(tmp_path / "mine.csv", LAWS)
    code, out, err = _cli(capsys, "evaluate", str(path), "--target", "3200", "--methods",
                          "model-size")
    assert (code, out) == (2, "")
    assert err == ("error: mine: model 'a' has no parameter count; the model-size method "
                   "needs it (column 'size' in wide files, 'params' in long files)\n")


def test_no_default_budget_fits_says_which_sizes_there_are(tmp_path, capsys):
    path = _wide(tmp_path / "few.csv", LAWS, sizes=(1000, 2000))
    code, out, err = _cli(capsys, "evaluate", str(path), "--target", "4000")
    assert (code, out) == (2, "")
    assert err == ("error: no default budget fits the target 4,000: the sizes every model "
                   "has measured (1,000, 2,000) leave none between target/512 and target/2 "
                   "with 3 sizes at or below it; give --budgets\n")


def test_benchmark_files_keep_the_papers_budgets():
    from lensllm.core.benchmark import BUDGETS, TARGET
    from lensllm.core.evaluation import default_budgets

    flan = lensllm.load_benchmark("flan")
    assert default_budgets(TARGET, tasks=[flan]) == default_budgets(TARGET) == list(BUDGETS)


# ----------------------------------------------------- row 7: degenerate rankings

def test_one_model_warns_and_relacc_is_null_with_the_reason(tmp_path, capsys):
    path = _wide(tmp_path / "one.csv", {"a": LAWS["a"]})
    code, out, err = _cli(capsys, "evaluate", str(path), "--target", "3200", "--methods",
                          "subset-loss", "--format", "json")
    assert code == 0, err
    assert json.loads(out)[0]["relacc"] is None and json.loads(out)[0]["pearcorr"] is None
    assert ("warning: one: one model only: RelAcc and PearCorr are undefined (null); there "
            "is no choice to score\n") in err
    assert "warning: one: only one candidate (a): there is nothing to choose between" in err

    code, out, err = _cli(capsys, "select", str(path), "--budget", "800", "--target", "3200",
                          "--method", "ats")
    assert code == 0
    assert err == ("warning: one: only one candidate (a): there is nothing to choose between, "
                   "so its P(best) of 1 says nothing\n")
    assert "Only one candidate, a: nothing to compare" in out


def test_identical_curves_are_a_tie(tmp_path, capsys):
    path = _wide(tmp_path / "same.csv", {name: LAWS["b"] for name in "vwxyz"})
    code, out, err = _cli(capsys, "select", str(path), "--budget", "800", "--target", "3200",
                          "--method", "rectified", "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    assert result["decision"] == "tie" and result["contenders"] == list("vwxyz")
    assert [r["p_best"] for r in result["ranking"]] == pytest.approx([0.2] * 5)
    (line,) = err.splitlines()
    assert line.startswith("warning: same: v, w, x, y, z tie on the rectified score (")
    assert line.endswith("): the pick of v among them is arbitrary (input order)")


def test_losses_rising_with_data_warn(tmp_path, capsys):
    laws = {**LAWS, "up": lambda n: 2.0 + 0.1 * math.log(n)}
    path = _wide(tmp_path / "up.csv", laws)
    code, _, err = _cli(capsys, "select", str(path), "--budget", "800", "--target", "3200",
                        "--method", "subset-loss")
    assert code == 0
    assert err == ("warning: up: up: the loss rises with data (2.461 at 100 to 2.668 at "
                   "800); a scaling law assumes it falls, so check the curve file (a wrong "
                   "column, or a metric where higher is better)\n")


def test_the_api_issues_ranking_warnings(tmp_path):
    curves = lensllm.load_curves(_wide(tmp_path / "one.csv", {"a": LAWS["a"]}))
    with pytest.warns(RankingWarning, match="only one candidate"):
        selection = lensllm.select(curves, "ats", budget=800, target=3200)
    assert selection.warnings == ["one: only one candidate (a): there is nothing to choose "
                                  "between, so its P(best) of 1 says nothing"]
    clean = lensllm.load_curves(_wide(tmp_path / "ok.csv", LAWS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lensllm.select(clean, "ats", budget=800, target=3200).warnings == []


# ------------------------------------------------------ row 8: decision in words

def _selection(p_best, predicted, lower=None, upper=None, budget=128, target=2048):
    n = len(predicted)
    predicted = np.asarray(predicted, dtype=float)
    return Selection("lensllm", "t", budget, target, [f"m{i}" for i in range(n)], predicted,
                     predicted=predicted,
                     lower=None if lower is None else np.asarray(lower, dtype=float),
                     upper=None if upper is None else np.asarray(upper, dtype=float),
                     p_best=np.asarray(p_best, dtype=float), details={"level": 0.9})


def test_decision_words_follow_p_best_and_intervals():
    clear = decide(_selection([0.95, 0.05], [2.0, 2.3], [1.8, 2.1], [2.2, 2.5]))
    assert clear.kind == "clear" and clear.headline.startswith("Clear winner: m0 (P(best) "
                                                                "0.95). Its 90 % interval "
                                                                "overlaps that of m1")
    assert clear.next_step == ""
    near = decide(_selection([0.68, 0.32], [5.854, 5.879], [5.0, 5.0], [6.8, 6.8]),
                  params={"m0": 1e6, "m1": 2e6}, tokens_per_example={"m0": 50, "m1": 50},
                  reference_flops=1e12)
    assert near.kind == "near-tie" and near.contenders == ["m0", "m1"]
    assert near.headline == ("Near tie between m0 and m1 (P(best) 0.68 / 0.32; predicted "
                             "loss 5.854 vs 5.879); m0 leads.")
    assert near.next_step == ("Fine-tuning m0 and m1 on 256 examples (twice the budget), "
                              "about 2.30e+11 FLOPs, 23.0 % of fine-tuning every candidate "
                              "at the target would shorten the extrapolation by one "
                              "doubling.")
    unknown = decide(_selection([0.5, 0.5], [2.0, 2.1], [np.nan] * 2, [np.nan] * 2))
    assert unknown.kind == "not-enough-data"
    assert unknown.headline.startswith("Not enough data to say how sure: m0 is predicted")


def test_ledger_says_saved_only_when_saved():
    base = {"runs": 12, "spent_flops": 1e10, "reference_flops": 4e10, "fraction": 0.25,
            "actual_train_flops": 5.2e10, "zero_shot_flops": 1e8, "ntk_flops": 2e8}
    rows = {r[0]: r for r in ledger_rows(base)}
    total = 5.2e10 + 1e8 + 2e8
    assert float(rows["the decision, total"][1]) == pytest.approx(total, rel=1e-3)
    # like for like: the reference counted with the search's epochs per pass (5.2)
    assert float(rows["reference: every candidate fine-tuned at the target"][1]) == \
        pytest.approx(4e10 * 5.2, rel=1e-3)
    # without --verify: a range from one epoch at the target to the estimate
    assert saved_text(base) == (f"none to {100 * (1 - total / 2.08e11):.1f} % saved: the "
                                "decision cost 131 % of one epoch at the target, less than "
                                "the estimate; --verify measures it")
    cheap = {**base, "actual_train_flops": 2e10}
    assert saved_text(cheap) == (f"{100 * (1 - 2.03e10 / 4e10):.1f} % to "
                                 f"{100 * (1 - 2.03e10 / 4e10 / 2):.1f} % saved")
    verified = {**base, "verify_train_flops": 9e10, "target_train_flops": 3.76e10}
    assert saved_text(verified) == ("nothing saved: the decision cost 139 % of fine-tuning "
                                    "every candidate at the target")


# ------------------------------------------------------------ row 6: plot names

def test_plot_names_are_unique_and_stable_for_any_name(tmp_path):
    names = ["模型-α", "模板-β", "gpt2", "org/gpt2", "org_gpt2"]
    files = [plot_name(n) for n in names]
    assert len(set(files)) == len(files)
    assert files == [plot_name(n) for n in names]
    assert files[2].startswith("gpt2-") and files[0].endswith(".png")
    assert all("/" not in f for f in files)


def test_report_of_non_ascii_candidates_shows_each_plot_once(tmp_path):
    from lensllm.core.curves import Curve, CurveSet
    from lensllm.report.run_report import write_report
    from lensllm.run.pipeline import RunOutcome

    flan = lensllm.load_benchmark("flan")
    renamed = {"gpt2": "模型-α", "t5-small": "模板-β", "facebook/bart-base": "бaрт"}
    curves = CurveSet([Curve(new, flan[old].sizes, flan[old].losses, flan[old].zero_shot,
                             flan[old].params) for old, new in renamed.items()], task="flan")
    selection = lensllm.select(curves, "rectified", budget=51_200, target=1_638_400)
    config = SimpleNamespace(run_dir=tmp_path, name="names", target=1_638_400, raw={})
    ledger = {"runs": 30, "spent_flops": 1e15, "reference_flops": 4e16, "fraction": 0.025,
              "actual_train_flops": 3e15}
    write_report(RunOutcome(config=config, task="flan", curves=curves, selection=selection,
                            halving=None, ledger=ledger, failures=[], verify=None,
                            verified=None, weight_metrics={}, wall_seconds=1.0))
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert len(plots) == 4 and "all-candidates.png" in plots
    page = (tmp_path / "report.html").read_text("utf-8")
    images = [part.split('"', 1)[0] for part in page.split('src="data:image/png;base64,')[1:]]
    assert len(set(images)) == 4


# ------------------------------------------------- row 10: labels, notes, plots

def test_select_names_the_interval_level(tmp_path, capsys):
    path = _wide(tmp_path / "mine.csv", LAWS)
    code, out, _ = _cli(capsys, "select", str(path), "--budget", "800", "--target", "3200",
                        "--method", "rectified")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("rank"))
    assert header.split()[-5:] == ["low", "90", "%", "high", "P(best)"]
    assert " 90 % low " in header
    code, out, _ = _cli(capsys, "select", str(path), "--budget", "800", "--target", "3200",
                        "--method", "rectified", "--format", "json")
    assert json.loads(out)["interval_level"] == 0.9


def test_fit_says_when_the_default_law_becomes_rectified(tmp_path, capsys):
    path = _wide(tmp_path / "mine.csv", LAWS)
    note = ("no NTK data for this model: F is a free parameter, so the LensLLM law is the "
            "rectified law (F = D_l)")
    code, out, err = _cli(capsys, "fit", str(path), "--model", "a", "--budget", "800",
                          "--target", "3200")
    assert code == 0, err
    assert out.splitlines()[:2] == ["mine: a -- rectified law (asked for lensllm) on 5 points "
                                    "(sizes <= 800)", f"note: {note}"]
    code, out, err = _cli(capsys, "fit", str(path), "--model", "a", "--budget", "800",
                          "--target", "3200", "--format", "json")
    result = json.loads(out)
    assert (result["law"], result["law_requested"], result["note"]) == ("rectified",
                                                                        "lensllm", note)
    assert err == f"note: {note}\n"


def test_fit_plot_has_a_band_and_readable_y_labels(tmp_path, monkeypatch):
    from lensllm.report import plots

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig),
                                                          save(fig, path))[1])
    flan = lensllm.load_benchmark("flan").subset(["gpt2", "t5-small", "facebook/bart-base"])
    flan.task = "flan"
    from lensllm.report.bench import fit_report

    report = fit_report(flan, "gpt2", "rectified", 51_200, 1_638_400, "measured",
                        tmp_path / "fit.png")
    assert report["json"]["lower"] < report["json"]["predicted"] < report["json"]["upper"]
    (fig,) = figures
    ax = fig.axes[0]
    assert any("PolyCollection" in type(c).__name__ for c in ax.collections)
    assert "90 % interval" in [t.get_text() for t in ax.get_legend().get_texts()]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the saved figure is closed: draw it on a fresh canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for t in ax.yaxis.get_ticklabels(which="both")
              if t.get_visible() and t.get_text()]
    low, high = ax.get_ylim()
    labels = [t for t in labels if low <= t.get_position()[1] <= high]
    assert len(labels) >= 2
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.y0)
    assert all(a.y1 <= b.y0 for a, b in itertools.pairwise(boxes))


@pytest.mark.parametrize("losses", [(2.1, 2.4, 2.9), (0.4, 3.0, 9.0)])
def test_y_labels_are_plain_numbers_over_any_range(losses):
    """Less than a decade and more: a few plain labels, none overlapping."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lensllm.report.plots import _finish_log_axes, _pyplot

    fig, ax = _pyplot().subplots(figsize=(6.4, 4.4), dpi=110)
    ax.plot([10, 100, 1000], losses)
    _finish_log_axes(ax, "t")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    low, high = ax.get_ylim()
    labels = [t for t in ax.yaxis.get_ticklabels(which="both")
              if t.get_visible() and t.get_text() and low <= t.get_position()[1] <= high]
    assert 2 <= len(labels) <= 9
    assert all(t.get_text().replace(".", "").isdigit() for t in labels), \
        [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent(canvas.get_renderer()) for t in labels),
                   key=lambda b: b.y0)
    assert all(a.y1 <= b.y0 for a, b in itertools.pairwise(boxes))


def test_default_methods_are_kept_by_the_selectors_own_input_checks() -> None:
    from lensllm.core.benchmark import BUDGETS, load_benchmark
    from lensllm.core.evaluation import usable_methods

    # nlpmetrics needs weight-spectrum metrics the benchmark does not carry: the note is
    # the selector's own error, so a subclass's extra check is never missed
    kept, notes = usable_methods([load_benchmark("flan")], ["ats", "nlpmetrics"], BUDGETS)
    assert [s.label for s in kept] == ["ats"]
    assert len(notes) == 1
    assert notes[0].startswith("skipped nlpmetrics: flan: model 'MBZUAI/LaMini-GPT-124M' "
                               "has no pl_alpha measurement")
