"""Failure survival of ``lensllm run``: the real CLI in a subprocess, on the micro zoo.

(a) ``kill -9`` of the coordinator mid-search, then a restart: it resumes; no finished
    job is lost or redone; no half-written row.
(b) a worker process that dies mid-job (local pool of 2 workers, and Ray): the job is
    retried and the search completes; a job that always fails is recorded as failed
    with its error after ``executor.retries`` retries, the search goes on and the report
    lists it.
(c) a truncated record and a partial (temporary) record in ``records/``: reported on
    stderr and as ``corrupt_record`` events, moved to ``records/corrupt/`` and their jobs
    redone; a valid orphan record is ingested, not redone.

Every run uses one torch thread per job (``training.num_threads: 1``), so results are
bit-identical across executors and can be compared with an uninterrupted reference run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("yaml")

from lensllm.run.store import Store, write_record
from micro_runs import SIZES, cli_args, cli_env, descendants, run_cli, strip_volatile, write_config

pytestmark = pytest.mark.torch

CANDIDATES = ("d32-L1-pt240", "d64-L2-pt80", "d96-L2-pt30")
# zero-shot + NTK + one per size (weight-spectrum jobs run only for nlpmetrics or --verify)
N_JOBS = len(CANDIDATES) * (2 + len(SIZES))


# ------------------------------------------------------------------------ helpers

def stored(run_dir: Path) -> dict[str, dict[str, Any]]:
    """key -> row of the run's store (result stripped of volatile fields)."""
    with Store(run_dir, invocation="reader") as store:
        return {row.key: {"kind": row.kind, "candidate": row.candidate, "size": row.size,
                          "status": row.status, "error": row.error, "attempts": row.attempts,
                          "invocation": row.invocation, "result": row.result,
                          "stripped": strip_volatile(row.result)}
                for row in store.jobs()}


def events(run_dir: Path) -> list[dict[str, Any]]:
    with Store(run_dir, invocation="reader") as store:
        return store.events()


def invocations(run_dir: Path) -> list[str]:
    return [e["invocation"] for e in events(run_dir) if e["event"] == "start"]


def key_of(rows: dict[str, dict[str, Any]], kind: str, candidate: str,
           size: int | None) -> str:
    return next(k for k, r in rows.items()
                if (r["kind"], r["candidate"], r["size"]) == (kind, candidate, size))


def assert_whole_rows(run_dir: Path) -> None:
    """The SQLite file is intact and every row holds a complete, plausible result."""
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for row in stored(run_dir).values():
        if row["status"] == "failed":
            assert row["error"] and row["result"] is None
            continue
        result = row["result"]
        if row["kind"] == "ntk":
            assert len(result["eigenvalues"]) == len(result["projections"]) > 0
        elif row["kind"] == "nlpmetrics":
            assert math.isfinite(result["pl_alpha"])
        else:
            assert math.isfinite(result["test_loss"]) and result["size"] == row["size"]


@pytest.fixture(scope="module")
def reference(micro, tmp_path_factory) -> dict[str, Any]:
    """An uninterrupted run of the tiny config (local executor, one worker)."""
    folder = tmp_path_factory.mktemp("reference")
    config = write_config(folder, micro)
    out = run_cli(config, folder / "run")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = stored(folder / "run")
    assert len(rows) == N_JOBS and all(r["status"] == "done" for r in rows.values())
    return {"run_dir": folder / "run", "rows": rows, "summary": json.loads(out.stdout)}


# ----------------------------------------------------------- (a) coordinator kill -9

def _done_rows(db_path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _kill_and_resume(config: Path, run_dir: Path, reference: dict[str, Any]) -> set[str]:
    """Start the run, SIGKILL the coordinator mid-search, restart it; check that nothing
    finished was lost or redone.  Returns the keys recovered from worker records."""
    proc = subprocess.Popen(cli_args(config, run_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli_env())
    helpers: list[int] = []
    try:
        deadline = time.monotonic() + 600
        # Past the zero-shot and NTK jobs and two fine-tuning runs: killed mid-search.
        while _done_rows(run_dir / "results.sqlite") < 8:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        helpers = descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(2 if helpers else 0)
    for pid in helpers:  # what the dead coordinator started and left behind (Ray agents)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # they ignore SIGTERM once orphaned

    assert_whole_rows(run_dir)
    before = stored(run_dir)
    assert 8 <= len(before) < N_JOBS
    first = invocations(run_dir)
    assert len(first) == 1

    out = run_cli(config, run_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_whole_rows(run_dir)
    after = stored(run_dir)
    first_inv, second_inv = invocations(run_dir)
    assert first_inv == first[0]

    # Nothing finished before the kill was lost or changed ...
    for key, row in before.items():
        assert after[key]["invocation"] == first_inv
        assert after[key]["result"] == row["result"]
    # ... nor submitted again: the second invocation submitted only unfinished jobs, and
    # took the jobs that workers finished after the kill from their records.
    log = events(run_dir)
    done_first = {e["key"] for e in log if e["event"] == "done" and e["invocation"] == first_inv}
    submitted_second = {e["key"] for e in log
                        if e["event"] == "submit" and e["invocation"] == second_inv}
    recovered = set(after) - set(before) - submitted_second
    assert done_first == set(before)
    assert not done_first & submitted_second
    assert all(after[k]["invocation"] == second_inv for k in set(after) - set(before))
    assert not [e for e in log if e["event"] == "corrupt_record"]
    # The resumed search stored exactly what an uninterrupted run stores.
    assert {k: r["stripped"] for k, r in after.items()} == {
        k: r["stripped"] for k, r in reference["rows"].items()}
    assert json.loads(out.stdout)["ranking"] == reference["summary"]["ranking"]
    return recovered


def test_kill_minus_9_coordinator_resumes_without_losing_or_redoing_jobs(
        micro, reference, tmp_path):
    """Local executor, one in-process worker: the job running at the kill dies with the
    coordinator and is redone with the unfinished ones."""
    config = write_config(tmp_path, micro)
    recovered = _kill_and_resume(config, tmp_path / "run", reference)
    # at most the job whose record was renamed into place just before the kill, before
    # the coordinator committed its row (a window of microseconds)
    assert len(recovered) <= 1


@pytest.mark.slow
def test_kill_minus_9_coordinator_with_ray_resumes(micro, reference, tmp_path):
    """Ray executor: the local Ray goes down with its driver; jobs whose workers wrote a
    record before dying are recovered from it, the others are redone."""
    pytest.importorskip("ray")
    config = write_config(tmp_path, micro, executor={"kind": "ray", "num_cpus": 1})
    _kill_and_resume(config, tmp_path / "run", reference)


# ------------------------------------------------------------ (b) dead workers, failures

FAULT = "crash:d64-L2-pt80@32:1;fail:d96-L2-pt30@64:99"


def _check_crash_and_failure(run_dir: Path, out: subprocess.CompletedProcess,
                             reference: dict[str, Any], died: str) -> None:
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    error = "RuntimeError: injected failure (attempt 2)"
    left_out = ("left out of the ranking: 2 fine-tuning size(s) finished (16, 32); the "
                "lensllm method needs 3")
    assert summary["failures"] == [
        {"job": "d96-L2-pt30 @ 64", "error": error, "attempts": 2},
        {"job": "d96-L2-pt30 (ranking)", "error": left_out, "attempts": 0}]
    assert [ln for ln in out.stderr.splitlines() if ln.startswith("warning:")] == [
        f"warning: failed after 2 attempt(s): d96-L2-pt30 @ 64: {error}",
        f"warning: d96-L2-pt30: {left_out}"]
    assert_whole_rows(run_dir)
    rows = stored(run_dir)
    assert len(rows) == N_JOBS
    crashed = key_of(rows, "finetune", "d64-L2-pt80", 32)
    failed = key_of(rows, "finetune", "d96-L2-pt30", 64)
    # the crashed job was retried once and finished; the failing one is recorded as failed
    assert rows[crashed]["status"] == "done" and rows[crashed]["attempts"] == 2
    assert rows[failed]["status"] == "failed" and rows[failed]["error"] == error
    assert rows[failed]["attempts"] == 2
    retries = [e for e in events(run_dir)  # retries that spent an attempt
               if e["event"] == "retry" and e["detail"].get("counted", True)]
    assert [e["detail"]["error"] for e in retries if e["key"] == crashed] == [died]
    assert [e["detail"]["error"] for e in retries if e["key"] == failed] == [
        "RuntimeError: injected failure (attempt 1)"]
    # no other job spent a retry, and every other result equals the reference run's
    for key, row in rows.items():
        if key not in (crashed, failed):
            assert row["attempts"] == 1, (row["candidate"], row["size"])
        if key != failed:
            assert row["stripped"] == reference["rows"][key]["stripped"]
    # the search went on: the candidate left with 2 sizes is out of the ranking (the
    # method needs 3), the others are ranked, and the report lists the failures
    assert sorted(r["model"] for r in summary["ranking"]) == ["d32-L1-pt240", "d64-L2-pt80"]
    report = (run_dir / "report.md").read_text()
    failures = report.split("## Failures", 1)[1].split("##", 1)[0]
    assert "| d96-L2-pt30 @ 64 | RuntimeError: injected failure (attempt 2) | 2 |" in failures
    assert f"| d96-L2-pt30 (ranking) | {left_out} | 0 |" in failures
    assert "<td class=\"t\">d96-L2-pt30 @ 64</td>" in (run_dir / "report.html").read_text()


def test_dead_pool_worker_is_retried_and_a_failing_job_is_reported(micro, reference, tmp_path):
    config = write_config(tmp_path, micro,
                          executor={"kind": "local", "workers": 2, "retries": 1})
    out = run_cli(config, tmp_path / "run", fault=FAULT)
    _check_crash_and_failure(tmp_path / "run", out, reference,
                             died="the worker process died while running the job")
    # the jobs the crash interrupted or kept queued were resubmitted free of charge
    free = [e for e in events(tmp_path / "run")
            if e["event"] == "retry" and e["detail"].get("counted") is False]
    assert free and all(e["detail"]["error"] == "interrupted when another job's worker died "
                        "(not counted against its retries)" for e in free)


def test_dead_ray_worker_is_retried_and_a_failing_job_is_reported(micro, reference, tmp_path):
    pytest.importorskip("ray")
    config = write_config(tmp_path, micro,
                          executor={"kind": "ray", "num_cpus": 1, "retries": 1})
    out = run_cli(config, tmp_path / "run", fault=FAULT)
    _check_crash_and_failure(tmp_path / "run", out, reference,
                             died="the Ray worker died while running the job "
                                  "(WorkerCrashedError)")


@pytest.mark.slow
def test_zero_retries_fail_a_crashed_job_at_once(micro, tmp_path):
    """``retries: 0``: the job whose worker died fails after one attempt; the jobs that
    shared the broken pool with it are not charged and all finish."""
    config = write_config(tmp_path, micro, sizes=[16, 24, 32, 48], budget=48,
                          ntk={"enabled": False},
                          executor={"kind": "local", "workers": 2, "retries": 0})
    out = run_cli(config, tmp_path / "run", fault="crash:d32-L1-pt240@16:9")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = stored(tmp_path / "run")
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert [(r["candidate"], r["size"], r["attempts"]) for r in failed] == [
        ("d32-L1-pt240", 16, 1)]
    assert failed[0]["error"] == "the worker process died while running the job"
    assert len(rows) == 3 * 5 and all(r["attempts"] == 1 for r in rows.values())


# ----------------------------------------------------------------- (c) broken records

def test_corrupt_and_partial_records_are_redone_and_orphans_ingested(
        micro, reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference["run_dir"], run_dir)
    config = write_config(tmp_path, micro)
    rows = reference["rows"]
    truncated = key_of(rows, "finetune", "d32-L1-pt240", 64)
    partial = key_of(rows, "finetune", "d64-L2-pt80", 32)
    orphan = key_of(rows, "finetune", "d96-L2-pt30", 64)
    orphan_ntk = key_of(rows, "ntk", "d64-L2-pt80", None)
    # As if the coordinator had died before ingesting these four jobs' records:
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        db.executemany("DELETE FROM jobs WHERE key = ?",
                       [(k,) for k in (truncated, partial, orphan, orphan_ntk)])
    records = run_dir / "records"

    def payload(key: str) -> dict[str, Any]:
        row = rows[key]
        return {"kind": row["kind"], "candidate": row["candidate"], "size": row["size"],
                "seed": 0, "result": row["result"], "attempts": 1}

    for key in (orphan, orphan_ntk):  # the worker finished and wrote its record
        write_record(records, key, payload(key))
    whole = write_record(records, truncated, payload(truncated)).read_bytes()
    (records / f"{truncated}.json").write_bytes(whole[: len(whole) // 2])  # cut short
    tmp_name = f".{partial}.0123abcd.tmp"  # a worker died while writing
    (records / tmp_name).write_bytes(whole[:100])
    first_inv = invocations(run_dir)[0]

    out = run_cli(config, run_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    second_inv = invocations(run_dir)[1]
    warning = next(ln for ln in out.stderr.splitlines() if ln.startswith("warning:"))
    assert warning == (f"warning: 2 corrupt or partial worker record(s) moved to "
                       f"{records / 'corrupt'}; their jobs will be redone: "
                       f"{truncated}.json, {tmp_name}")
    log = events(run_dir)
    corrupt = [e for e in log if e["event"] == "corrupt_record"]
    assert {(e["key"], e["invocation"]) for e in corrupt} == {(truncated, second_inv),
                                                            (partial, second_inv)}
    assert sorted(p.name for p in (records / "corrupt").iterdir()) == sorted(
        [f"{truncated}.json", tmp_name.lstrip(".")])
    assert not list(records.glob("*.json")) and not list(records.glob(".*.tmp"))
    # only the two broken jobs were redone; the orphans were ingested as they were
    submitted = {e["key"] for e in log if e["event"] == "submit"
                 and e["invocation"] == second_inv}
    assert submitted == {truncated, partial}
    after = stored(run_dir)
    for key in (orphan, orphan_ntk):
        assert after[key]["invocation"] == second_inv
        assert after[key]["result"] == rows[key]["result"]
    assert all(after[k]["invocation"] == first_inv for k in rows
               if k not in (truncated, partial, orphan, orphan_ntk))
    assert_whole_rows(run_dir)
    assert {k: r["stripped"] for k, r in after.items()} == {
        k: r["stripped"] for k, r in rows.items()}
