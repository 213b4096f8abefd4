"""The progress of ``lensllm run``: heartbeats from running jobs, the plain log lines
(what a pipe or a log gets) and the live display (what a terminal gets)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import pytest

from lensllm.run.executors.base import Job
from lensllm.run.progress import (
    Heartbeat,
    RunProgress,
    beating,
    duration,
    heartbeat_dir,
    read_heartbeats,
    training_callback,
)


def test_durations_read_as_time():
    assert [duration(s) for s in (0.04, 3.25, 42.4, 185, 7440)] == [
        "0.0 s", "3.2 s", "42 s", "3 min 05 s", "2 h 04 min"]


def test_job_labels_name_what_the_job_does():
    def job(kind: str, size: int | None) -> Job:
        return Job(key="k", kind=kind, candidate="d64", size=size, seed=0, spec={})

    assert [job(*a).label() for a in (("finetune", 32), ("finetune", 0), ("ntk", None),
                                       ("nlpmetrics", None))] == [
        "d64 @ 32", "zero-shot losses of d64", "NTK probe of d64", "weight spectra of d64"]


class _Step:
    """What lensllm.hf.train.Progress carries (the fields the callback reads)."""

    def __init__(self, stage: str, step: int, max_steps: int, train_loss: float | None = None,
                 val_loss: float | None = None) -> None:
        self.stage, self.step, self.max_steps = stage, step, max_steps
        self.train_loss, self.val_loss, self.best_val_loss = train_loss, val_loss, val_loss


def test_a_job_beats_its_heartbeat_through_the_training_callback(tmp_path):
    assert training_callback() is None  # outside a job
    with beating(str(tmp_path), "key1", "d64 @ 32"):
        notify = training_callback()
        notify(_Step("zero_shot", 0, 8, val_loss=4.0))
        notify(_Step("train", 1, 8, train_loss=3.9))  # within a second: throttled
        assert read_heartbeats(heartbeat_dir(tmp_path))["key1"]["stage"] == "zero_shot"
        notify(_Step("eval", 4, 8, val_loss=3.5))  # evaluations always beat
    beat = read_heartbeats(heartbeat_dir(tmp_path))["key1"]
    assert (beat["label"], beat["stage"], beat["step"], beat["max_steps"], beat["val_loss"]) == (
        "d64 @ 32", "eval", 4, 8, 3.5)
    with beating("", "key2", "no run directory") as heartbeat:
        assert heartbeat is None and training_callback() is None


def test_plain_lines_say_what_is_reused_done_and_running(tmp_path):
    stream = io.StringIO()
    progress = RunProgress(stream=stream, interval=0.0)
    progress.watch(heartbeat_dir(tmp_path))
    progress.reused_jobs("zero-shot losses", 3, 3)
    progress.reused_jobs("fine-tuning", 1, 3)
    progress.reused_jobs("NTK probes", 0, 3)
    beat = Heartbeat(heartbeat_dir(tmp_path), "a", "d64 @ 32")
    with progress.stage("fine-tuning", 2):
        beat.beat(force=True, stage="train", step=3, max_steps=10, train_loss=2.5)
        time.sleep(1.3)  # the first sighting, then one (zero-second) interval later
        progress.job_done("a", "d64 @ 32")
        progress.job_done("b", "d96 @ 32", ok=False)
    progress.message("finished: " + progress.summary())
    lines = stream.getvalue().splitlines()
    assert lines[:4] == ["zero-shot losses: all 3 job(s) reused from the store",
                         "fine-tuning: 1 of 3 job(s) reused from the store",
                         "fine-tuning: 2 job(s) to run",
                         lines[3]]
    assert re.fullmatch(r"  running d64 @ 32 for \d\.\d s: step 3/10, train loss 2\.500",
                        lines[3])
    done = [ln for ln in lines if ln.startswith("[")]
    assert re.fullmatch(r"\[1/2\] fine-tuning: d64 @ 32 done \(elapsed \d\.\d s, "
                        r"ETA \d\.\d s\)", done[0])
    assert re.fullmatch(r"\[2/2\] fine-tuning: d96 @ 32 failed \(elapsed \d\.\d s\)", done[1])
    assert lines[-1] == "finished: 4 job(s) reused from the store, 2 computed"
    assert "None" not in stream.getvalue() and "(0 s)" not in stream.getvalue()


def test_quiet_shows_warnings_only():
    stream = io.StringIO()
    progress = RunProgress(stream=stream, quiet=True)
    progress.reused_jobs("fine-tuning", 2, 2)
    with progress.stage("fine-tuning", 1):
        progress.job_done("a", "d64 @ 32")
    progress.warn("something to know")
    assert stream.getvalue() == "warning: something to know\n"


def test_live_display_shows_the_running_job_its_step_and_loss(tmp_path):
    stream = io.StringIO()
    progress = RunProgress(stream=stream, live=True)
    progress.watch(heartbeat_dir(tmp_path))
    beat = Heartbeat(heartbeat_dir(tmp_path), "a", "d64 @ 32")
    with progress.stage("fine-tuning at 32", 2):
        beat.beat(force=True, stage="train", step=3, max_steps=10, train_loss=2.5)
        time.sleep(1.2)
        progress.message("a note above the bars")
        progress.job_done("a", "d64 @ 32")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "d64 @ 32" in text and "3/10" in text and "train loss 2.500" in text
    assert "a note above the bars" in text
    assert re.search(r"fine-tuning at 32 .*1/2 .*0:00:0\d ETA", text)


# ----------------------------------------------------- a heartbeat from a pool worker

def beating_runner(job: Job) -> dict[str, Any]:
    """A job that reports two training steps, slowly (runs in a pool worker)."""
    notify = training_callback()
    for step in (1, 2):
        notify(_Step("eval", step, 4, val_loss=3.0 - step / 10))
        time.sleep(1.0)
    return {"ok": True}


@pytest.mark.torch
@pytest.mark.slow  # two spawned workers importing torch: over 10 s on 2 cores
def test_pool_workers_heartbeats_reach_the_coordinators_progress(tmp_path):
    pytest.importorskip("torch")
    from lensllm.run.executors.local import LocalExecutor

    records = tmp_path / "records"
    jobs = [Job(key=f"k{i}", kind="finetune", candidate=f"m{i}", size=16, seed=0, spec={},
                records_dir=str(records)) for i in range(2)]
    stream = io.StringIO()
    progress = RunProgress(stream=stream, interval=0.0)
    progress.watch(heartbeat_dir(records))
    executor = LocalExecutor(workers=2, job_runner=beating_runner)
    try:
        with progress.stage("fine-tuning", 2):
            for job, outcome in executor.run(jobs):
                assert outcome["result"] == {"ok": True}
                progress.job_done(job.key, job.label())
    finally:
        executor.close()
    running = [ln for ln in stream.getvalue().splitlines() if ln.startswith("  running")]
    assert any(re.fullmatch(r"  running m\d @ 16 for \d\.\d s: step 2/4, val loss 2\.800", ln)
               for ln in running), stream.getvalue()


def test_heartbeats_ignore_unreadable_files(tmp_path: Path):
    folder = heartbeat_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "bad.json").write_text("{not json")
    (folder / "list.json").write_text("[1]")
    assert read_heartbeats(folder) == {}
