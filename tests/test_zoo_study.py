"""benchmarks/zoo_study.py end to end on a synthetic suite folder laid out as
``lensllm suite build`` exports it (tests/study_suite.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmark_scripts import load_script
from lensllm.cli import main as cli_main
from lensllm.core import suites
from study_suite import write_study_suite


@pytest.fixture(scope="module")
def zoo_study():
    return load_script("zoo_study")


@pytest.fixture(scope="module")
def report(zoo_study, tmp_path_factory) -> tuple[Path, str]:
    folder = write_study_suite(tmp_path_factory.mktemp("study") / "suite")
    return folder, zoo_study.study(str(folder))


def _row(text: str, *cells: str) -> list[str]:
    """The cells of the first markdown row that starts with ``cells``."""
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if parts[:len(cells)] == list(cells):
            return parts
    raise AssertionError(f"no row {cells} in the report")


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1]


def test_ntk_section_correlates_f_with_the_rectified_fit_and_the_knee(report):
    _, text = report
    ntk = _section(text, "## 1.")
    # F was made to follow D_l and D0 in the synthetic suite: the ranks agree
    prose = _row(ntk, "prose", "5")
    assert prose[2].startswith("+1.00") and prose[4].startswith("+0.97")
    pooled = _row(ntk, "pooled", "10")
    assert pooled[2].startswith("+0.99")
    # the knees of the per-candidate table follow the pre-learned size
    knees = [float(_row(ntk, "prose", f"m{m}")[8]) for m in range(5)]
    assert knees == sorted(knees) and knees[0] < knees[-1]


def test_selection_section_is_what_bench_computes(report, capsys):
    folder, text = report
    selection = _section(text, "## 2.").split("## 3.")[0]
    cells = json.loads(_bench(capsys, "--suite", str(folder), "--methods",
                              "rectified,ats", "--format", "json"))
    relacc = _section(selection, "**RelAcc x100**").split("**MAPE")[0]
    headers = _row(relacc, "task", "ratio")
    for cell in cells:
        row = _row(relacc, cell["task"], cell["ratio"])
        assert float(row[headers.index(cell["method"])]) == pytest.approx(cell["relacc"],
                                                                           abs=0.05)
    calibration = json.loads(_bench(capsys, "--suite", str(folder), "--calibration",
                                    "--methods", "ats", "--format", "json"))
    coverage = _section(selection, "**coverage of the 90 % interval x100**")
    headers = _row(coverage, "task", "ratio")
    for cell in calibration:
        row = _row(coverage, cell["task"], cell["ratio"])
        if cell["coverage"] is None:  # too few sizes under the budget to back-test
            assert row[headers.index("ats")] == "no back-test"
        else:
            assert float(row[headers.index("ats")]) == pytest.approx(cell["coverage"],
                                                                     abs=0.05)
        assert row[headers.index("zeroshot")] == "n/a"  # predicts no loss
    # the curves carry no weight metrics: nlpmetrics is left out, and said so
    assert "- skipped nlpmetrics: prose: model 'm0' has no pl_alpha measurement" in selection
    summary = _section(selection, "**Summary over task x ratio cells**")
    assert _row(summary, "lensllm-paper", "8") and _row(summary, "model-size", "8")[5] == "n/a"


def _bench(capsys, *args: str) -> str:
    capsys.readouterr()
    cli_main(["bench", *args])
    return capsys.readouterr().out


def test_hessian_section_reads_the_runs_and_reports_what_is_odd(report):
    _, text = report
    hessian = _section(text, "## 3.").split("## Data notes")[0]
    notes = _section(text, "## Data notes")
    # the synthetic traces fall with the size, before and after the knee
    row = _row(hessian, "prose", "m2")
    assert row[4].startswith("-1.00") and float(row[7]) < float(row[6])
    assert "Candidates with ρ < 0: 10 of 10" in hessian
    assert _row(hessian, "pairs", "transformer.h.1")[2:] == ["5", "-1", "5"]
    # pairs/m1 lacks one Hessian: 8 runs, and a note
    assert _row(hessian, "pairs", "m1", "8")
    assert "- pairs: 1 fine-tuning run(s) without a Hessian measurement: m1@64" in notes
    assert ("- pairs: 1 run(s) with a negative layer distance (counted as zero in the "
            "complexity term): m2@128 (1 layer(s))") in notes
    gap = _section(hessian, "### 3b.")
    assert _row(gap, "prose", "sum-sqrt")[3] == "5 / 5"
    # the synthetic distances grow with n while the gap falls: S alone anticorrelates
    assert _row(gap, "prose", "S")[3] == "0 / 5"
    assert _row(gap, "prose", "m0", "9")[3:] == [
        "+1.00 (p 0)", "+1.00 (p 0)", "-1.00 (p 0)", "+1.00 (p 0)"]
    select = _section(hessian, "### 3c.")
    assert len(re.findall(r"^\| (prose|pairs) \| 1/\d+ \|", select, re.M)) == 8
    assert _row(select, "mean") and _row(select, "worst")


def test_default_suite_and_bad_folders(zoo_study, report, monkeypatch, capsys, tmp_path):
    folder, _ = report
    monkeypatch.setattr(suites, "_packaged_folder", lambda name: folder)
    assert zoo_study.main(["--tasks", "prose", "--skip-selection"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Zoo study: {folder}") and "## 2." not in out
    assert "| pairs |" not in out
    assert zoo_study.main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == (f"error: unknown suite '{tmp_path / 'nowhere'}': "
                                       "choose lin2024, zoo or zoo-uncapped, or a "
                                       "folder with a suite.json\n")
    assert zoo_study.main(["lin2024", "--skip-selection"]) == 2
    assert capsys.readouterr().err == ("error: suite 'lin2024' has no runs to study; give "
                                       "a suite folder\n")


def test_a_partial_task_is_studied_with_what_it_has(zoo_study, tmp_path):
    """A candidate whose verification run failed (no loss at the target) and one whose
    NTK job failed: the sections still come out, and the notes say what is missing."""
    folder = write_study_suite(tmp_path / "suite")
    path = folder / "prose.json"
    data = json.loads(path.read_text())
    data["curves"][3]["points"] = data["curves"][3]["points"][:-1]
    del data["curves"][4]["ntk"]
    for curve in data["curves"][:4]:
        curve["ntk"]["steps"] = 6.0
    path.write_text(json.dumps(data))
    runs_path = folder / "prose.runs.json"
    runs = json.loads(runs_path.read_text())
    for per_size in runs["runs"].values():
        per_size["4096"]["steps"] = per_size["2048"]["steps"]  # both at the step cap
    runs_path.write_text(json.dumps(runs))
    text = zoo_study.study(str(folder), ["prose"])
    assert "not computed" not in text
    notes = _section(text, "## Data notes")
    assert "- prose: no loss at the target 4,096 for m3: left out of the selection scores" \
        in notes
    assert "- prose: m4: no NTK spectrum in the curve file" in notes
    assert ("- prose: the measured t is 6 steps for every candidate (the run at the "
            "smallest size): F(η, t) differs between candidates only by the spectrum and "
            "η") in notes
    assert ("- prose: 5 of 5 candidates train for the same largest step count at several "
            "sizes (a step cap): sizes >= 2,048 all take 256 steps; the losses there "
            "compare data at equal steps") in notes
    assert _row(_section(text, "## 1."), "prose", "5")[7] == "0 of 5 / 0 of 4 / 3 of 4"
    assert _row(_section(text, "**Summary over task x ratio cells**"), "ats", "4")
    assert _row(_section(text, "### 3c."), "prose", "1/8")[4] == "4"
