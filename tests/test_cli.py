"""End-to-end: the real command line in a subprocess, on real (bundled) inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lensllm.core.benchmark import load_benchmark

JSON_KEYS = {"task", "method", "budget", "target", "ratio", "pearcorr", "relacc", "rmse",
             "mape"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lensllm", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def flan_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("curves") / "flan.csv"
    path.write_text(load_benchmark("flan").to_wide_csv())
    return path


def test_bench_json_schema_and_values():
    out = run("bench", "--tasks", "flan,gigaword", "--methods", "ats,zeroshot", "--format",
              "json")
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout)
    assert len(cells) == 2 * 7 * 2
    assert all(set(c) == JSON_KEYS for c in cells)
    first = next(c for c in cells if c["task"] == "flan" and c["method"] == "ats"
                 and c["ratio"] == "1/8")
    assert first["budget"] == 204800 and first["target"] == 1638400
    assert round(first["pearcorr"], 1) == 90.9 and round(first["relacc"], 1) == 93.6
    zs = next(c for c in cells if c["method"] == "zeroshot")
    assert zs["rmse"] is None and zs["mape"] is None


def test_bench_table_and_plots(tmp_path):
    out = run("bench", "--tasks", "wmt19", "--methods", "ats,subset-loss", "--plots",
              str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    assert "PearCorr x100 -- wmt19" in out.stdout and "RelAcc x100 -- wmt19" in out.stdout
    assert "mean over cells" in out.stdout
    lines = out.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[3:10]] == ["1/8", "1/16", "1/32", "1/64", "1/128",
                                                    "1/256", "1/512"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "wmt19-pearcorr.png", "wmt19-relacc.png"]


def test_bench_csv():
    out = run("bench", "--tasks", "flan", "--methods", "ats", "--format", "csv")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == "task,method,budget,target,ratio,pearcorr,relacc," \
                                         "rmse,mape"
    assert len(out.stdout.splitlines()) == 8


def test_evaluate_on_a_curve_file(flan_csv):
    out = run("evaluate", str(flan_csv), "--target", "1638400", "--budgets", "25600,3200",
              "--methods", "ats[k=3,delta=5],subtuning", "--format", "json")
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout)
    assert {c["method"] for c in cells} == {"ats[k=3,delta=5]", "subset-loss"}
    assert {c["task"] for c in cells} == {"flan"}
    ats = next(c for c in cells if c["budget"] == 25600 and c["method"].startswith("ats"))
    assert round(ats["pearcorr"], 1) == 61.1


def test_select_table_and_json(flan_csv):
    out = run("select", str(flan_csv), "--budget", "25600", "--target", "1638400",
              "--method", "ats", "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["method"] == "ats" and len(result["ranking"]) == 30
    assert result["chosen"] == result["ranking"][0]["model"]
    assert [r["rank"] for r in result["ranking"]] == list(range(1, 31))
    table = run("select", str(flan_csv), "--budget", "25600", "--target", "1638400",
                "--method", "ats")
    assert table.returncode == 0
    assert table.stdout.strip().splitlines()[-1] == f"chosen: {result['chosen']}"


def test_fit_prints_parameters_and_plots(flan_csv, tmp_path):
    png = tmp_path / "fit.png"
    out = run("fit", str(flan_csv), "--model", "gpt2", "--law", "rectified", "--budget",
              "51200", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    assert "rectified law on 10 points (sizes <= 51,200)" in out.stdout
    assert "predicted loss at 1,638,400" in out.stdout and "measured" in out.stdout
    assert png.stat().st_size > 10_000
    as_json = json.loads(run("fit", str(flan_csv), "--model", "gpt2", "--budget", "51200",
                             "--format", "json").stdout)
    assert as_json["law"] == "rectified" and set(as_json["params"]) >= {"B", "beta", "E"}


@pytest.mark.parametrize("args, message", [
    (["select", "nope.csv", "--budget", "1", "--target", "2"], "error: nope.csv: no such file"),
    (["bench", "--tasks", "imagenet"],
     "error: unknown benchmark task 'imagenet'; choose from flan, wmt19, gigaword"),
    (["bench", "--methods", "ats,oracle"], "error: unknown method 'oracle'; choose from "
     "zeroshot, subset-loss, model-size, vanilla, rectified, ats, lensllm, lensllm-paper, "
     "nlpmetrics, subtuning, zero-shot, modelsize"),
    (["bench", "--format", "xml"], "error: Invalid value for '--format': 'xml' is not one of "
     "'table', 'json', 'csv'."),
    (["bench", "--frobnicate"], "error: No such option '--frobnicate'. Did you mean "
     "'--format'?"),
    (["evaluate", "FLAN", "--target", "1638400", "--budgets", "1e400"],
     "error: --budgets: '1e400' must be a positive whole number of examples"),
])
def test_errors_are_one_line_and_exit_2(args, message, flan_csv):
    args = [str(flan_csv) if a == "FLAN" else a for a in args]
    out = run(*args)
    assert out.returncode == 2
    assert out.stderr.strip() == message
    assert "Traceback" not in out.stderr


def test_select_budget_not_below_target(flan_csv):
    out = run("select", str(flan_csv), "--budget", "1638400", "--target", "1638400")
    assert out.returncode == 2
    assert out.stderr.startswith("error: budget (1638400) must be smaller than the target")
    assert len(out.stderr.strip().splitlines()) == 1


def test_bench_calibration_table():
    out = run("bench", "--calibration", "--methods", "ats", "--tasks", "gigaword")
    assert out.returncode == 0, out.stderr
    assert "coverage of the 90 % interval (x100) -- ats" in out.stdout
    assert out.stdout.strip().splitlines()[-2].startswith("mean")
    assert out.stdout.strip().splitlines()[-1].startswith("worst cell: gigaword ")


def test_bench_adaptive_json_and_pareto_plot(tmp_path):
    out = run("bench", "--adaptive", "--methods", "ats", "--flops-budgets", "0.01,0.03",
              "--format", "json", "--plots", str(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [r["budget"] for r in result["adaptive"]] == [0.01, 0.03]
    for row in result["adaptive"]:
        assert set(row["relacc"]) == {"flan", "wmt19", "gigaword"}
        assert all(f <= row["budget"] + 1e-12 for f in row["flops"].values())
    assert result["fixed"][0]["ratio"] == "1/8"
    assert (tmp_path / "adaptive-pareto.png").stat().st_size > 10_000


def test_select_json_has_interval_keys(flan_csv):
    out = run("select", str(flan_csv), "--budget", "25600", "--target", "1638400",
              "--method", "rectified", "--format", "json")
    assert out.returncode == 0, out.stderr
    top = json.loads(out.stdout)["ranking"][0]
    assert {"lower", "upper", "p_best", "predicted"} <= set(top)
    assert top["lower"] <= top["predicted"] <= top["upper"]
