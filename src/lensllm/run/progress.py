"""What a run shows while it works, and the heartbeats its jobs send.

Workers (in-process, pool or Ray processes on the coordinator's filesystem) write each
running job's *heartbeat* -- its stage, step and loss -- as a small JSON file in
``<run_dir>/records/heartbeat/``, at most once a second.  A file works for every
executor alike, and the coordinator alone decides what to show: a thread of
:class:`RunProgress` reads the files while the coordinator waits for results.

On a terminal the progress is a live ``rich`` display (the stage's bar with elapsed
time and ETA, one line per running job with its step and loss); elsewhere (a log, a
pipe, a test capturing stderr) it is plain lines: one per stage, one per finished job
with elapsed time and ETA, and the running jobs' steps every ``interval`` seconds.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from lensllm.fileio import atomic_write_text

HEARTBEAT_DIR = "heartbeat"
#: the least time between two heartbeats of a job (each one is a file write)
HEARTBEAT_S = 1.0
#: how often the coordinator reads the heartbeats
POLL_S = 0.5


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 04 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def heartbeat_dir(records_dir: str | Path) -> Path:
    return Path(records_dir) / HEARTBEAT_DIR


# ----------------------------------------------------------------- the worker side

class Heartbeat:
    """Writes one job's heartbeat file (throttled); silent if it cannot."""

    def __init__(self, folder: Path, key: str, label: str) -> None:
        self.path = folder / f"{key}.json"
        self.label = label
        self.started = time.time()
        self._last = 0.0

    def beat(self, force: bool = False, **fields: Any) -> None:
        now = time.time()
        if not force and now - self._last < HEARTBEAT_S:
            return
        self._last = now
        data = {"label": self.label, "started": self.started, "time": now, **fields}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(data))
        except OSError:
            pass  # progress display only: never fail a job over it


_CURRENT: contextvars.ContextVar[Heartbeat | None] = contextvars.ContextVar(
    "lensllm_heartbeat", default=None)


@contextlib.contextmanager
def beating(records_dir: str, key: str, label: str) -> Iterator[Heartbeat | None]:
    """The heartbeat of the job running inside this block (None without a run
    directory), available to the job's code through :func:`training_callback`."""
    if not records_dir:
        yield None
        return
    heartbeat = Heartbeat(heartbeat_dir(records_dir), key, label)
    heartbeat.beat(force=True, stage="start")
    token = _CURRENT.set(heartbeat)
    try:
        yield heartbeat
    finally:
        _CURRENT.reset(token)


def training_callback() -> Callable[[Any], None] | None:
    """A :data:`lensllm.hf.train.ProgressCallback` that beats the current job's
    heartbeat with each step's stage, step and losses (None outside a job)."""
    heartbeat = _CURRENT.get()
    if heartbeat is None:
        return None

    def notify(progress: Any) -> None:
        heartbeat.beat(force=progress.stage != "train", stage=progress.stage,
                       step=progress.step, max_steps=progress.max_steps,
                       train_loss=progress.train_loss, val_loss=progress.val_loss,
                       best_val_loss=progress.best_val_loss)

    return notify


def read_heartbeats(folder: Path) -> dict[str, dict[str, Any]]:
    """key -> the last heartbeat of each job that has one."""
    out = {}
    for path in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text("utf-8"))
            if isinstance(data, dict):
                out[path.stem] = data
    return out


def _job_status(beat: dict[str, Any]) -> str:
    """``step 12/40, train loss 3.412`` (what a heartbeat says about its job)."""
    parts = []
    if beat.get("max_steps"):
        parts.append(f"step {beat.get('step', 0)}/{beat['max_steps']}")
    for name in ("train_loss", "val_loss"):
        value = beat.get(name)
        if isinstance(value, int | float):
            parts.append(f"{name.replace('_', ' ')} {value:.3f}")
    stage = beat.get("stage")
    if stage in ("zero_shot", "test", "start"):
        parts.append({"zero_shot": "zero-shot evaluation", "test": "test evaluation",
                      "start": "starting"}[stage])
    return ", ".join(parts)


# ------------------------------------------------------------ the coordinator side

class RunProgress:
    """Progress of a run on ``stream`` (stderr): live on a terminal, plain lines
    elsewhere; ``quiet`` shows warnings only.

    The pipeline calls :meth:`stage` around each batch of jobs and :meth:`job_done` as
    each ends; :meth:`watch` names the heartbeat folder to read meanwhile.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 interval: float = 30.0, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interval = interval
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.live = tty if live is None else live
        self.reused = 0
        self.computed = 0
        self._beats: Path | None = None
        self._stage: _Stage | None = None

    # -------------------------------------------------------------------- lines
    def _line(self, text: str) -> None:
        stage = self._stage
        if stage is not None and stage.rich is not None:
            stage.rich.console.print(text, markup=False, highlight=False, soft_wrap=True)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.quiet:
            self._line(text)

    def warn(self, text: str) -> None:
        """A warning: shown even with ``quiet`` (it is not progress)."""
        self._line(f"warning: {text}")

    # ------------------------------------------------------------------- stages
    def watch(self, folder: Path | None) -> None:
        """Read the running jobs' heartbeats from ``folder`` during stages."""
        self._beats = folder

    def reused_jobs(self, what: str, reused: int, total: int) -> None:
        """Say how many of a stage's jobs the store already holds."""
        self.reused += reused
        if reused and reused == total:
            self.message(f"{what}: all {total} job(s) reused from the store")
        elif reused:
            self.message(f"{what}: {reused} of {total} job(s) reused from the store")

    @contextlib.contextmanager
    def stage(self, what: str, total: int) -> Iterator[None]:
        """``total`` jobs to compute for ``what``, inside the block."""
        stage = _Stage(self, what, total)
        self._stage = stage
        try:
            stage.start()
            yield
        finally:
            stage.stop()
            self._stage = None

    def job_done(self, key: str, label: str, ok: bool = True) -> None:
        self.computed += 1
        if self._stage is not None:
            self._stage.done(key, label, ok)

    def summary(self) -> str:
        """``N job(s) reused from the store, M computed``."""
        return f"{self.reused} job(s) reused from the store, {self.computed} computed"


class _Stage:
    """One batch of jobs on display, and the thread that follows their heartbeats."""

    def __init__(self, progress: RunProgress, what: str, total: int) -> None:
        self.progress = progress
        self.what = what
        self.total = total
        self.finished = 0
        self.started = time.monotonic()
        self.rich: Any = None
        self._overall: Any = None
        self._rows: dict[str, Any] = {}  # key -> rich task id of a running job
        self._ended: set[str] = set()
        self._shown: dict[str, float] = {}  # key -> when its plain status line was written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        p = self.progress
        if p.quiet:
            return
        if p.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.rich = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=24),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                console=Console(file=p.stream, force_terminal=True), transient=False)
            self._overall = self.rich.add_task(self.what, total=self.total, status="")
            self.rich.start()
        else:
            p.stream.write(f"{self.what}: {self.total} job(s) to run\n")
            p.stream.flush()
        if p._beats is not None:
            self._thread = threading.Thread(target=self._follow, daemon=True,
                                            name="lensllm-progress")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.rich is not None:
            self.rich.stop()
            self.rich = None

    def done(self, key: str, label: str, ok: bool) -> None:
        with self._lock:
            self.finished += 1
            self._ended.add(key)
            if self.rich is not None:
                if key in self._rows:
                    self.rich.remove_task(self._rows.pop(key))
                self.rich.update(self._overall, completed=self.finished)
                return
        if self.progress.quiet:
            return
        elapsed = time.monotonic() - self.started
        left = self.total - self.finished
        eta = f", ETA {duration(elapsed / self.finished * left)}" if left else ""
        self.progress._line(f"[{self.finished}/{self.total}] {self.what}: {label} "
                            f"{'done' if ok else 'failed'} (elapsed {duration(elapsed)}{eta})")

    def _follow(self) -> None:
        while not self._stop.wait(POLL_S):
            beats = read_heartbeats(self.progress._beats)  # type: ignore[arg-type]
            with self._lock:
                for key, beat in beats.items():
                    if key not in self._ended:
                        self._show(key, beat)

    def _show(self, key: str, beat: dict[str, Any]) -> None:
        label, status = str(beat.get("label", key)), _job_status(beat)
        if self.rich is not None:
            fields = {"completed": beat.get("step", 0), "status": status}
            if key not in self._rows:
                self._rows[key] = self.rich.add_task(f"  {label}",
                                                     total=beat.get("max_steps"), **fields)
            else:
                self.rich.update(self._rows[key], total=beat.get("max_steps"), **fields)
            return
        now = time.monotonic()
        shown = self._shown.get(key)
        if shown is None:  # the first status line after one interval of running
            self._shown[key] = now
        elif now - shown >= self.progress.interval:
            self._shown[key] = now
            running = duration(time.time() - float(beat.get("started", time.time())))
            self.progress._line(f"  running {label} for {running}: {status}")
