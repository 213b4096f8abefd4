"""The SQLite results store and the worker-record protocol."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time

import pytest

from lensllm.errors import InputError
from lensllm.run.store import Store, job_key, write_record


def test_job_key_is_canonical_and_sensitive():
    a = job_key({"candidate": {"x": 1, "y": [1, 2]}, "size": 64})
    b = job_key({"size": 64, "candidate": {"y": [1, 2], "x": 1}})
    assert a == b and len(a) == 32
    assert job_key({"candidate": {"x": 1, "y": [1, 2]}, "size": 128}) != a


def test_put_get_and_events(tmp_path):
    with Store(tmp_path, invocation="inv1") as store:
        store.put("k1", "finetune", "m", 64, 0, {"test_loss": 2.5})
        store.put("k2", "finetune", "m", 128, 0, None, error="RuntimeError: boom", attempts=3)
        assert store.done("k1") == {"test_loss": 2.5}
        assert store.done("k2") is None and store.get("k2").status == "failed"
        assert store.get("k2").attempts == 3 and store.get("k1").invocation == "inv1"
        assert [e["event"] for e in store.events()] == ["done", "failed"]
        store.set_meta("config", {"a": 1})
    with Store(tmp_path) as again:  # reopened: everything persisted
        assert again.get_meta("config") == {"a": 1}
        assert [r.key for r in again.jobs(status="done")] == ["k1"]


def test_jobs_are_looked_up_by_kind_candidate_and_size(tmp_path):
    with Store(tmp_path) as store:
        store.put("a16", "finetune", "a", 16, 0, {"test_loss": 3.0})
        store.put("b16", "finetune", "b", 16, 0, {"test_loss": 2.0})
        store.put("a32", "finetune", "a", 32, 0, None, error="RuntimeError: boom")
        store.put("a-ntk", "ntk", "a", None, 0, {"eigenvalues": []})
        store.put("a32-old", "finetune", "a", 32, 1, {"test_loss": 2.5})
        assert [r.key for r in store.jobs("finetune", candidate="a")] == ["a16", "a32",
                                                                          "a32-old"]
        assert [r.key for r in store.jobs("finetune", "done", candidate="a")] == [
            "a16", "a32-old"]
        assert [r.key for r in store.jobs("finetune", candidate="a", size=32)] == [
            "a32", "a32-old"]
        assert [r.key for r in store.jobs(size=16)] == ["a16", "b16"]
        assert store.jobs("ntk", candidate="b") == []
        plan = store._db.execute("EXPLAIN QUERY PLAN SELECT key FROM jobs WHERE kind = ? AND "
                                 "candidate = ? AND size = ?", ("finetune", "a", 16)).fetchall()
        assert "jobs_by_candidate" in str(plan)  # an index, not a scan of every job


def test_nan_results_are_stored_readably(tmp_path):
    with Store(tmp_path) as store:
        store.put("k", "finetune", "m", 1, 0, {"loss": float("nan")})
        assert store.done("k") == {"loss": "nan"}


def test_worker_records_are_ingested_and_corrupt_ones_quarantined(tmp_path):
    store = Store(tmp_path)
    write_record(store.records_dir, "good", {"kind": "finetune", "candidate": "m", "size": 8,
                                             "seed": 0, "result": {"test_loss": 3.0}})
    (store.records_dir / "bad.json").write_text('{"key": "bad", "kind": "fine')  # truncated
    (store.records_dir / ".half.0123.tmp").write_text("{")  # a worker died mid-write
    ingested, corrupt = store.ingest_records()
    assert ingested == 1 and sorted(corrupt) == [".half.0123.tmp", "bad.json"]
    assert store.done("good") == {"test_loss": 3.0}
    assert not list(store.records_dir.glob("*.json"))
    assert sorted(p.name for p in (store.records_dir / "corrupt").iterdir()) == [
        "bad.json", "half.0123.tmp"]
    assert {e["key"] for e in store.events("corrupt_record")} == {"bad", "half"}
    assert store.ingest_records() == (0, [])  # idempotent
    store.close()


def test_record_for_a_finished_job_is_not_ingested_twice(tmp_path):
    with Store(tmp_path, invocation="first") as store:
        store.put("k", "finetune", "m", 8, 0, {"test_loss": 1.0})
        write_record(store.records_dir, "k", {"kind": "finetune", "candidate": "m",
                                              "size": 8, "seed": 0,
                                              "result": {"test_loss": 9.0}})
        assert store.ingest_records() == (0, [])
        assert store.done("k") == {"test_loss": 1.0} and store.get("k").invocation == "first"


def test_not_a_store(tmp_path):
    (tmp_path / "results.sqlite").write_text("this is not sqlite" * 100)
    with pytest.raises(InputError, match="is not a lensllm results store"):
        Store(tmp_path)


def _hammer(path: str) -> None:
    store = Store(path, invocation="victim")
    i = 0
    while True:
        store.put(f"k{i}", "finetune", "m", i, 0, {"test_loss": float(i),
                                                    "blob": "x" * 20_000})
        i += 1


def test_kill_minus_9_mid_write_leaves_only_whole_rows(tmp_path):
    """SIGKILL a process that writes rows as fast as it can: every row that survived is
    complete and valid JSON, and the store opens and accepts writes afterwards."""
    proc = multiprocessing.get_context("spawn").Process(target=_hammer, args=(str(tmp_path),))
    proc.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            with sqlite3.connect(tmp_path / "results.sqlite", timeout=5) as db:
                if db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] >= 20:
                    break
        except sqlite3.Error:
            continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    with Store(tmp_path, invocation="after") as store:
        rows = store.jobs()
        assert len(rows) >= 20
        for row in rows:
            assert row.status == "done"
            assert row.result["test_loss"] == float(row.size)
            assert len(row.result["blob"]) == 20_000
        keys = {r.key for r in rows}
        assert keys == {f"k{i}" for i in range(len(rows))}  # no gaps: rows land in order
        store.put("new", "finetune", "m", 1, 0, {"ok": True})
        assert store.done("new") == {"ok": True}
