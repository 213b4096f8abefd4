"""``lensllm run CONFIG --plan`` and a whole run from Hub ids and a dataset folder, in real
processes, offline: micro-zoo models placed in a temporary HF cache under Hub ids, the
micro task as a folder of train/test JSONL files."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("datasets")

from hub_cache import COMMIT, docs_folder, place_model
from micro_runs import cli_env


@pytest.fixture(scope="module")
def hub_setup(micro: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hub-run")
    home = root / "hf-home"
    names = sorted(micro["candidates"])[:2]
    for name in names:
        place_model(Path(micro["candidates"][name]), home, f"lensllm-test/{name}")
    docs_folder(micro, root / "docs")
    config = {
        "name": "hub", "seed": 0, "cache_dir": str(micro["cache"]),
        "task": {"dataset": "docs", "test_split": "test", "n0": 16, "val_size": 32},
        "candidates": [{"path": f"lensllm-test/{names[0]}"},
                       {"path": f"lensllm-test/{names[1]}", "revision": "main"}],
        "sizes": [16, 32, 64], "budget": 64, "target": 512, "search": "grid",
        "training": {"batch_size": 8, "max_length": 32, "max_epochs": 1, "patience": 1,
                     "eval_every": 2, "num_threads": 1, "precision": "auto"},
        "ntk": {"enabled": True, "params": "last", "probe_size": 8},
        "executor": {"kind": "local", "workers": 1, "retries": 0},
    }
    path = root / "hub.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return {"config": path, "home": home, "names": names, "run_dir": root / "runs" / "hub"}


def lensllm(setup: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    env = dict(cli_env(), HF_HOME=str(setup["home"]))
    return subprocess.run([sys.executable, "-m", "lensllm", "run", str(setup["config"]),
                           *args], capture_output=True, text=True, timeout=600, env=env)


def test_plan_lists_every_job_then_the_run_spends_what_it_said(hub_setup) -> None:
    out = lensllm(hub_setup, "--plan", "--no-measure", "--format", "json", "--quiet")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert not hub_setup["run_dir"].exists()  # a plan writes nothing into the run directory
    names = hub_setup["names"]
    assert [c["name"] for c in plan["candidates"]] == names
    assert all(c["commit"] == COMMIT and c["step_s"] is None for c in plan["candidates"])
    assert plan["task"] == {"name": "docs", "train_pool": 368, "test": 64, "validation": 32}
    kinds = [(j["kind"], j["candidate"], j["size"]) for j in plan["jobs"]]
    assert kinds == ([("zero-shot", n, 0) for n in names] + [("ntk", n, None) for n in names]
                     + [("finetune", n, s) for s in (16, 32, 64) for n in names])
    sized = {(j["candidate"], j["size"]): j for j in plan["jobs"] if j["kind"] == "finetune"}
    # one epoch of 16 examples in batches of 8; FLOPs: the ledger's 6 x params x tokens
    first = next(c for c in plan["candidates"] if c["name"] == names[0])
    assert sized[(names[0], 16)]["max_steps"] == 2
    assert sized[(names[0], 16)]["flops"] == pytest.approx(
        6 * first["params"] * first["tokens_per_example"] * 16)
    assert all(j["est_seconds"] is None for j in plan["jobs"])
    grid = plan["totals"]["the grid"]
    assert grid["jobs"] == 10 and grid["seconds"] is None

    out = lensllm(hub_setup, "--format", "json", "--quiet")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert {r["model"] for r in summary["ranking"]} == set(names) and not summary["failures"]
    # the run's compute ledger is the plan's, to the FLOP
    assert summary["ledger"]["spent_flops"] == pytest.approx(grid["flops"], rel=1e-12)
    assert summary["ledger"]["reference_flops"] == pytest.approx(plan["reference_flops"],
                                                                 rel=1e-12)
    # the store keys each candidate by its commit
    with sqlite3.connect(hub_setup["run_dir"] / "results.sqlite") as db:
        results = [json.loads(r[0]) for r in db.execute(
            "SELECT result FROM jobs WHERE kind = 'finetune' AND status = 'done'")]
    assert len(results) == 8
    assert {r["candidate_identity"]["hub"]["commit"] for r in results} == {COMMIT}
    assert {r["precision"] for r in results} == {"fp32"}


def test_measured_plan_estimates_every_job(hub_setup) -> None:
    out = lensllm(hub_setup, "--plan", "--quiet")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("plan of hub.yaml: task docs (368 training examples, test 64, "
                           "validation 32); sizes 16, 32, 64; target 512; search grid\n")
    rows = [line for line in text.splitlines() if line.startswith("finetune ")]
    assert len(rows) == 6 and all(re.search(r"\d s  grid$", row) for row in rows)
    assert re.search(r"^the grid: 10 jobs, [\d.e+]+ FLOPs = [\d.]+ % of fine-tuning every "
                     r"candidate at the target, est\. [\d.]+ (s|min)$", text, re.M)
    assert "fp32/cpu" in text and COMMIT[:12] in text


def test_no_measure_needs_plan(hub_setup) -> None:
    out = lensllm(hub_setup, "--no-measure")
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: --no-measure applies to --plan only; add --plan, "
                                  "or drop it")


def test_adaptive_plan_separates_the_first_rungs_from_what_the_budget_allows(
        micro: dict[str, Any], tmp_path: Path) -> None:
    from lensllm.run.config import parse_config
    from lensllm.run.plan import make_plan
    from lensllm.run.progress import RunProgress

    names = sorted(micro["candidates"])
    data = {"name": "adaptive", "cache_dir": str(micro["cache"]),
            "task": {"path": str(micro["task"]), "n0": 8, "val_size": 32},
            "candidates": [{"name": n, "path": micro["candidates"][n]} for n in names],
            "sizes": [8, 16, 32, 64, 128], "budget": 128, "target": 4096,
            "search": "adaptive", "flops_budget": 0.05,
            "training": {"batch_size": 8, "max_length": 32, "max_epochs": 2},
            "ntk": {"enabled": False}, "executor": {"kind": "local", "workers": 2}}
    config = parse_config(data, source=tmp_path / "adaptive.yaml")
    plan = make_plan(config, measure=False, verify=True, progress=RunProgress(quiet=True))
    phases = {(j.kind, j.size, j.phase) for j in plan.jobs}
    assert {p for k, s, p in phases if k == "finetune" and s in (8, 16, 32)} == {"first rungs"}
    assert {p for k, s, p in phases if k == "finetune" and s in (64, 128)} == {"further rungs"}
    assert {p for k, s, p in phases if s == 4096} == {"verify"}
    assert not any(j.kind == "ntk" for j in plan.jobs)
    assert plan.parallel == 2  # the local executor's two workers run a rung side by side
    least = plan.totals["at least (start and first rungs)"]
    most = plan.totals["at most (within the FLOPs budget)"]
    further = sum(j.flops for j in plan.jobs if j.phase == "further rungs")
    # the further rungs are charged up to what the FLOPs budget leaves after the first
    cap = 0.05 * plan.reference_flops
    assert most["flops"] == pytest.approx(min(least["flops"] + further,
                                              max(cap, least["flops"])))
    assert least["jobs"] == 3 + 9 and most["jobs"] == 3 + 15
    assert plan.totals["with --verify"]["jobs"] == 3 + 18
    assert "at most (within the FLOPs budget): 18 jobs" in plan.to_text()
