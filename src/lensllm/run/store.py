"""The results store: one SQLite file per run directory, written only by the coordinator.

A *job* (a fine-tuning run or an NTK measurement) is keyed by a hash of everything that
determines its result (candidate identity, task identity, size, seed, settings), so a
finished job is never redone and a changed setting is never mistaken for a finished one.

Crash safety, in layers:

* Workers never touch SQLite.  A worker writes its result as one JSON *record* in
  ``records/`` -- to a temporary name, fsync, then an atomic rename -- and the
  coordinator ingests records into SQLite.  A record left by a worker whose coordinator
  died is ingested at the next start; a truncated or corrupt one is reported, moved to
  ``records/corrupt/`` and its job redone.
* SQLite runs in WAL mode; each result is one transaction, so a ``kill -9`` at any
  moment leaves either the whole row or none of it.
* An ``events`` table logs every start, finish, retry and failure with the id of the
  invocation that did it (what the resume tests read).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensllm.errors import InputError
from lensllm.fileio import atomic_write_bytes, short_hash

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    candidate TEXT NOT NULL,
    size INTEGER,
    seed INTEGER,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    finished REAL NOT NULL,
    invocation TEXT NOT NULL
);
-- the pipeline looks jobs up by (kind, candidate, size)
CREATE INDEX IF NOT EXISTS jobs_by_candidate ON jobs (kind, candidate, size);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    invocation TEXT NOT NULL,
    key TEXT,
    event TEXT NOT NULL,
    detail TEXT
);
"""


def job_key(spec: dict[str, Any]) -> str:
    """A stable hash of a job's defining spec (canonical JSON)."""
    return short_hash({"schema": SCHEMA_VERSION, **spec}, 32, default=str)


def _dumps(obj: Any) -> str:
    def clean(value: Any) -> Any:  # NaN/inf are not JSON; keep them readable
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(obj), sort_keys=True)


@dataclass(frozen=True)
class JobRow:
    key: str
    kind: str
    candidate: str
    size: int | None
    seed: int | None
    status: str
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    finished: float
    invocation: str


def write_record(records_dir: Path, key: str, payload: dict[str, Any]) -> Path:
    """Atomically write a worker's result record (tmp file, fsync, rename)."""
    records_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(records_dir / f"{key}.json",
                              _dumps({"key": key, **payload}).encode())


class Store:
    """SQLite results store of one run directory."""

    def __init__(self, run_dir: str | Path, invocation: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the run directory {str(self.run_dir)!r} "
                             f"({exc.strerror})") from None
        self.path = self.run_dir / "results.sqlite"
        self.records_dir = self.run_dir / "records"
        self.invocation = invocation or uuid.uuid4().hex[:12]
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path} is not a lensllm results store ({exc}); move it "
                             "away or choose another run directory") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ meta and events
    def set_meta(self, key: str, value: Any) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       (key, _dumps(value)))

    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def log(self, event: str, key: str | None = None, detail: Any = None) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO events (time, invocation, key, event, detail) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (time.time(), self.invocation, key, event,
                        None if detail is None else _dumps(detail)))

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT time, invocation, key, event, detail FROM events"
        args: tuple = ()
        if event is not None:
            query += " WHERE event = ?"
            args = (event,)
        rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [{"time": t, "invocation": inv, "key": k, "event": e,
                 "detail": None if d is None else json.loads(d)} for t, inv, k, e, d in rows]

    # ------------------------------------------------------------------------ jobs
    def put(self, key: str, kind: str, candidate: str, size: int | None, seed: int | None,
            result: dict[str, Any] | None, *, error: str | None = None,
            attempts: int = 1) -> None:
        """Record a finished (``result``) or failed (``error``) job in one transaction."""
        status = "done" if error is None else "failed"
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO jobs (key, kind, candidate, size, seed, status, "
                "result, error, attempts, finished, invocation) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, kind, candidate, size, seed, status,
                 None if result is None else _dumps(result), error, attempts, time.time(),
                 self.invocation))
            db.execute("INSERT INTO events (time, invocation, key, event, detail) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (time.time(), self.invocation, key, status,
                        _dumps({"kind": kind, "candidate": candidate, "size": size})))

    def get(self, key: str) -> JobRow | None:
        row = self._db.execute("SELECT key, kind, candidate, size, seed, status, result, "
                               "error, attempts, finished, invocation FROM jobs WHERE key = ?",
                               (key,)).fetchone()
        return None if row is None else self._row(row)

    def done(self, key: str) -> dict[str, Any] | None:
        row = self.get(key)
        return row.result if row is not None and row.status == "done" else None

    def jobs(self, kind: str | None = None, status: str | None = None, *,
             candidate: str | None = None, size: int | None = None) -> list[JobRow]:
        """The stored jobs matching every filter given, oldest first."""
        query = ("SELECT key, kind, candidate, size, seed, status, result, error, attempts, "
                 "finished, invocation FROM jobs")
        clauses, args = [], []
        for column, value in (("kind", kind), ("status", status), ("candidate", candidate),
                              ("size", size)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        return [self._row(r) for r in self._db.execute(query + " ORDER BY finished", args)]

    @staticmethod
    def _row(row: tuple) -> JobRow:
        key, kind, candidate, size, seed, status, result, error, attempts, finished, inv = row
        return JobRow(key, kind, candidate, size, seed, status,
                      None if result is None else json.loads(result), error, attempts,
                      finished, inv)

    # --------------------------------------------------------------------- records
    def ingest_records(self) -> tuple[int, list[str]]:
        """Move worker records into SQLite; returns (ingested, corrupt file names).

        A record is deleted only after its row is committed, so a crash in between
        ingests it again (idempotently) next time.
        """
        if not self.records_dir.is_dir():
            return 0, []
        ingested, corrupt = 0, []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                payload = json.loads(path.read_text("utf-8"))
                key = payload["key"]
                if key != path.stem:
                    raise ValueError("key does not match the file name")
                fields = (payload["kind"], payload["candidate"], payload.get("size"),
                          payload.get("seed"))
                result, error = payload.get("result"), payload.get("error")
                if (result is None) == (error is None):
                    raise ValueError("a record holds exactly one of result and error")
                if result is not None and not isinstance(result, dict):
                    raise ValueError("the record's result is not a JSON object")
            except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                corrupt.append(path.name)
                self._quarantine(path, exc)
                continue
            if self.done(key) is None:
                self.put(key, *fields, result, error=error,
                         attempts=int(payload.get("attempts", 1)))
                ingested += 1
            path.unlink(missing_ok=True)
        for tmp in self.records_dir.glob(".*.tmp"):  # a worker died mid-write
            corrupt.append(tmp.name)
            self._quarantine(tmp, ValueError("partial record left by a worker"))
        return ingested, corrupt

    def _quarantine(self, path: Path, exc: Exception) -> None:
        target = self.records_dir / "corrupt"
        target.mkdir(exist_ok=True)
        os.replace(path, target / path.name.lstrip("."))
        self.log("corrupt_record", key=path.stem.lstrip(".").split(".")[0],
                 detail={"file": path.name, "error": str(exc)})
