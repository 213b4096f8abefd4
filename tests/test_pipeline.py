"""End to end: `lensllm run` on the micro zoo (real tiny models, real fine-tuning)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[1]


def micro_config(tmp: Path, cache: Path, **overrides) -> Path:
    import yaml

    config = yaml.safe_load((ROOT / "examples" / "micro.yaml").read_text())
    config.update({"cache_dir": str(cache), "run_dir": str(tmp / "run")}, **overrides)
    path = tmp / "micro.yaml"
    tmp.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: int = 600):
    import os

    return subprocess.run([sys.executable, "-m", "lensllm", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_micro_zoo_end_to_end_with_verify(tmp_path, micro):
    config = micro_config(tmp_path, micro["cache"])
    out = run_cli("run", str(config), "--verify", "--format", "json", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    ranking = summary["ranking"]
    assert len(ranking) == 3 and summary["chosen"] == ranking[0]["model"]
    assert all({"predicted", "lower", "upper", "p_best"} <= set(r) for r in ranking)
    assert 0 < summary["ledger"]["fraction"] < 1
    methods = {cell["method"] for cell in summary["verify"]}
    assert {"lensllm", "lensllm-paper", "ats", "rectified", "subset-loss"} <= methods
    import importlib.util

    if importlib.util.find_spec("weightwatcher") is not None:  # the nlpmetrics extra
        assert "nlpmetrics" in methods
    run_dir = tmp_path / "run"
    # the plot of all candidates, then one per candidate
    assert (run_dir / "report.md").read_text().count("![") == 4
    # --verify fine-tuned everyone at the target: the ledger's reference is measured
    assert summary["ledger"]["target_train_flops"] > 0
    assert summary["ledger"]["verify_train_flops"] >= summary["ledger"]["target_train_flops"]
    assert "measured: --verify fine-tuned every candidate at the target" in (
        run_dir / "report.md").read_text()
    assert "id=\"ranking\"" in (run_dir / "report.html").read_text()
    from lensllm import load_curves

    curves = load_curves(run_dir / "curves.json")
    assert all(c.ntk is not None and c.ntk.steps > 0 for c in curves)
    # the exports and the report carry the verification runs at the target
    truth = {c.model: c.loss_at(summary["target"]) for c in curves}
    assert all(v is not None for v in truth.values())
    best = min(truth, key=truth.get)
    assert f"True loss at the target: {best} {truth[best]:.4f}" in (
        run_dir / "report.md").read_text()
    assert {cell["budget"] for cell in summary["verify"]} == {32, 64}

    # a second invocation finds everything done: no job is submitted again
    again = run_cli("run", str(config), "--verify", "--format", "json", "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["chosen"] == summary["chosen"]
    from lensllm.run.store import Store

    with Store(run_dir) as store:
        invocations = [e["invocation"] for e in store.events("start")]
        assert len(invocations) == 2
        assert not [e for e in store.events("submit") if e["invocation"] == invocations[1]]


def test_job_keys_stay_what_existing_run_directories_hold(tmp_path):
    """The keys of a fixed checkpoint, task and training section, pinned to the values
    lensllm computed before the run layer was restructured: a run directory made then
    must resume without redoing a job."""
    from types import SimpleNamespace

    from lensllm.hf import Candidate, TrainConfig, load_task
    from lensllm.run.config import HessianSettings
    from lensllm.run.pipeline import finetune_job, hessian_job, metrics_job, ntk_job

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(
        '{"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 8, "n_positions": 32, '
        '"vocab_size": 16, "bos_token_id": 0, "eos_token_id": 0}\n')
    (checkpoint / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    task_file = tmp_path / "task.txt"
    task_file.write_text("".join(f"example number {i}: the quick brown fox\n"
                                 for i in range(64)))
    training = {"batch_size": 8, "max_length": 32, "max_epochs": 2, "patience": 1,
                "eval_every": 2, "num_threads": 1}
    config = SimpleNamespace(seed=0, training=training, cache_dir=tmp_path,
                             executor=SimpleNamespace(device="auto"),
                             ntk=SimpleNamespace(params="last", probe_size=8,
                                                 projection_dim=64),
                             hessian=HessianSettings(), measure_hessian=False)
    ctx = SimpleNamespace(
        config=config, candidates={"tiny": Candidate.from_dict({"name": "tiny",
                                                                "path": str(checkpoint)})},
        task_spec={"path": str(task_file)},
        task=load_task(task_file, test_size=8, val_size=8, n0=8, seed=0),
        training=TrainConfig.from_dict(training).identity(),
        store=SimpleNamespace(records_dir=tmp_path / "records"))
    assert finetune_job(ctx, "tiny", 64).key == "c1a09413e723c583bf6da23b7763f716"
    assert finetune_job(ctx, "tiny", 0).key == "b1baeaf4c5c410f103b267ce929f4d1d"
    assert ntk_job(ctx, "tiny").key == "580f18441fca23558ba903fa7b34239d"
    assert metrics_job(ctx, "tiny", ["PL"]).key == "08571fea98a83688b1a6f57ad90bd5c4"
    # The Hessian measurement, when asked for, rides on the fine-tuning runs (new keys:
    # their results hold more) but never on the zero-shot evaluation.
    config.hessian = HessianSettings(enabled=True, probe_size=4, samples=2)
    config.measure_hessian = True  # what RunConfig resolves enabled: true to
    measured = finetune_job(ctx, "tiny", 64)
    assert measured.key != "c1a09413e723c583bf6da23b7763f716"
    assert measured.spec["hessian"] == {"probe_size": 4, "samples": 2}
    assert finetune_job(ctx, "tiny", 0).key == "b1baeaf4c5c410f103b267ce929f4d1d"
    assert "hessian" not in finetune_job(ctx, "tiny", 0).spec
    assert hessian_job(ctx, "tiny").spec["hessian"] == {"probe_size": 4, "samples": 2}


@pytest.mark.torch
def test_weight_metrics_job_is_silent_and_leaves_logging_alone(micro):
    """weightwatcher logs at import time and calls logging.basicConfig, powerlaw prints:
    a metrics job in a fresh process prints nothing, leaves the root logger without
    handlers, and measures both PL alpha and E_TPL lambda."""
    pytest.importorskip("weightwatcher")
    name, path = sorted(micro["candidates"].items())[0]
    script = f"""
import json, logging
from lensllm.run.executors import Job
from lensllm.run.jobs import execute
from lensllm.hf import Candidate
spec = {{"candidate": Candidate(name={name!r}, path={path!r}).to_dict(),
        "task": {{"path": {str(micro["task"])!r}, "test_size": 8, "val_size": 8}},
        "training": {{}}}}
out = execute(Job(key="k", kind="nlpmetrics", candidate={name!r}, size=None, seed=0,
                  spec=spec, records_dir=""))
print(json.dumps({{"result": out, "root_handlers": len(logging.getLogger().handlers)}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr == ""
    report = json.loads(out.stdout)
    assert report["root_handlers"] == 0
    result = report["result"]["result"]
    assert result["pl_alpha"] > 0 and result["layers"] > 0
    # every layer's truncated-power-law fit succeeds (powerlaw 2 broke them all)
    assert result["e_tpl_lambda"] > 0 and result["e_tpl_fitted_layers"] == result["layers"]


@pytest.mark.slow
def test_nlpmetrics_method_measures_the_weights(tmp_path, micro):
    """Weight-spectrum jobs run for the nlpmetrics method (it ranks by them) and with
    --verify; a plain run of another method has none (test_failures' reference run
    counts its jobs exactly)."""
    pytest.importorskip("weightwatcher")
    from lensllm.run.store import Store

    config = micro_config(tmp_path, micro["cache"], search="grid", ntk={"enabled": False},
                          task={"path": str(micro["task"]), "n0": 8, "val_size": 16},
                          training={"batch_size": 8, "max_length": 32, "max_epochs": 1,
                                    "num_threads": 1},
                          budget=32, target=64, method="nlpmetrics[metric=e_tpl_lambda]")
    out = run_cli("run", str(config), "--format", "json", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    with Store(tmp_path / "run") as store:
        metrics = {row.candidate: row.result for row in store.jobs("nlpmetrics", "done")}
    assert set(metrics) == set(micro["candidates"])
    ranking = json.loads(out.stdout)["ranking"]
    lambdas = [metrics[r["model"]]["e_tpl_lambda"] for r in ranking]
    assert lambdas == sorted(lambdas)  # lower lambda ranks first


@pytest.mark.slow
def test_auto_skips_the_ntk_the_method_ignores_and_the_report_plots_hessians(tmp_path, micro):
    """A grid run of the default method with ``ntk`` left at auto and Hessians asked
    for: the plan and the run say the NTK is not measured and why, no NTK job runs,
    --verify names lensllm-paper as not scored instead of showing the rectified law's
    numbers under its name, and the report tabulates and plots every Hessian
    measurement the store holds."""
    from lensllm.run.store import Store
    from micro_runs import write_config

    config = write_config(tmp_path, micro, ntk={"params": "last", "probe_size": 8},
                          hessian={"enabled": True, "probe_size": 4, "samples": 2},
                          target=128)
    why = "ntk.enabled is auto and method lensllm does not read NTK spectra"
    plan = run_cli("run", str(config), "--plan", "--no-measure", "--quiet")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert f"NTK spectra: not measured ({why})" in plan.stdout
    assert "Hessian traces: measured (hessian.enabled is true in the config)" in plan.stdout
    assert "\nntk " not in plan.stdout  # no NTK job listed

    run_dir = tmp_path / "run"
    out = run_cli("run", str(config), "--run-dir", str(run_dir), "--verify", "--format",
                  "json", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["measured"]["ntk"] == {"measured": False, "why": why}
    assert summary["measured"]["hessian"]["measured"] is True
    assert summary["not_scored"] == {
        "lensllm-paper": f"reads NTK spectra; none was measured ({why})"}
    assert "lensllm-paper" not in {cell["method"] for cell in summary["verify"]}
    assert "ntk_flops" not in summary["ledger"]
    with Store(run_dir) as store:
        assert not store.jobs("ntk")
        pretrained = {r.candidate: r.result for r in store.jobs("hessian", "done")}
        runs = {(r.candidate, r.size): r.result["hessian"]
                for r in store.jobs("finetune", "done") if r.size}
    assert set(pretrained) == set(micro["candidates"])
    assert {n for _, n in runs} == {16, 32, 64, 128}  # the grid and the target
    md = (run_dir / "report.md").read_text()
    assert f"Not scored: lensllm-paper (reads NTK spectra; none was measured ({why}))." in md
    assert f"NTK spectra: not measured ({why})." in md
    section = md.split("## Hessian\n")[1].split("\n## ")[0]
    for (name, size), measured in runs.items():
        assert (f"| {name} | {size:,} | {measured['total_trace']:.4f} | "
                f"{measured['distance_total']:.4f} | {measured['train_loss']:.4f} | "
                f"{measured['gap']:.4f} |") in section
    for name, measured in pretrained.items():
        assert f"| {name} | pretrained | {measured['total_trace']:.4f} | - | - | - |" in section
    plots = [line for line in section.splitlines() if line.startswith("![")]
    assert len(plots) == len(micro["candidates"])
    assert all((run_dir / line.split("(")[1].rstrip(")")).stat().st_size > 10_000
               for line in plots)
