"""What protects a run directory and the machine, with real ``lensllm run`` processes on
the micro zoo: the run-directory lock (a second run refuses or waits; a lock left by a
``kill -9`` is taken over), workers that die with a killed coordinator, a changed
config refused unless ``--force``, unwritable folders as one ``error:`` line."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("yaml")

from lensllm.errors import InputError
from lensllm.run.executors.watchdog import pid_alive
from lensllm.run.lock import RunLock
from lensllm.run.store import Store
from micro_runs import cli_args, cli_env, descendants, run_cli, write_config

pytestmark = pytest.mark.torch

SINCE = r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+"


def _wait_for(condition, what: str, timeout: float = 120, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None:
            assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _done_keys(run_dir: Path) -> set[str]:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True,
                             timeout=1) as db:
            return {k for (k,) in db.execute("SELECT key FROM jobs WHERE status = 'done'")}
    except sqlite3.Error:
        return set()


def _holder_pid(run_dir: Path) -> int | None:
    return RunLock(run_dir).holder().get("pid")


# ----------------------------------------------------------------------- the lock

def test_lock_in_process_refuses_a_second_holder_and_names_the_first(tmp_path):
    with RunLock(tmp_path / "run"), pytest.raises(
            InputError, match=r"is in use by another lensllm run \(PID "):
        RunLock(tmp_path / "run").acquire()
    assert (tmp_path / "run" / "lock").read_text() == ""  # released cleanly: no holder


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    """The holder is SIGKILLed while holding the lock: the kernel released it, and the
    next run says whose lock it took over."""
    run_dir = tmp_path / "run"
    code = ("import os, signal; from lensllm.run.lock import RunLock; "
            f"RunLock({str(run_dir)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    dead = subprocess.run([sys.executable, "-c", code], env=cli_env())
    assert dead.returncode == -signal.SIGKILL
    heard: list[str] = []
    with RunLock(run_dir, notify=heard.append):
        pass
    assert len(heard) == 1 and re.fullmatch(
        r"took over the run directory's lock, left by a run that ended without releasing it "
        rf"\(PID \d+ on host {re.escape(socket.gethostname())}, {SINCE}\)", heard[0])


def test_a_second_run_refuses_a_waiting_one_takes_over_from_a_killed_holder(micro, tmp_path):
    """Run A holds the run directory; run B refuses at once (exit 2, one line naming A);
    run C waits with --wait; A is killed with SIGKILL mid-search; C takes the lock
    over, computes only what A had not finished, and prints plain progress lines."""
    config = write_config(tmp_path, micro)
    run_dir = tmp_path / "run"
    first = subprocess.Popen(cli_args(config, run_dir), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=cli_env())
    waiting = None
    try:
        _wait_for(lambda: _holder_pid(run_dir) == first.pid, "run A to take the lock",
                  proc=first)
        started = time.monotonic()
        second = run_cli(config, run_dir)
        refused_in = time.monotonic() - started
        assert second.returncode == 2 and second.stdout == ""
        assert re.fullmatch(
            rf"error: the run directory {re.escape(repr(str(run_dir)))} is in use by another "
            rf"lensllm run \(PID {first.pid} on host {re.escape(socket.gethostname())}, "
            rf"{SINCE}\); wait for it to end \(--wait\) or choose another run directory\n",
            second.stderr), second.stderr
        assert refused_in < 30  # no model was loaded: the interpreter's start-up only

        args = [a for a in cli_args(config, run_dir, "--wait") if a != "--quiet"]
        log = tmp_path / "waiting.log"
        with open(log, "w") as handle:
            waiting = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=handle,
                                       env=cli_env(), text=True)
        _wait_for(lambda: "waiting for the run directory" in log.read_text(),
                  "run C to wait", proc=waiting)
        _wait_for(lambda: len(_done_keys(run_dir)) >= 7, "run A to finish 7 jobs", proc=first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    done_by_first = _done_keys(run_dir)
    out, _ = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, log.read_text()[-3000:]
    assert json.loads(out)["chosen"]
    lines = log.read_text().splitlines()
    assert re.fullmatch(rf"waiting for the run directory {re.escape(repr(str(run_dir)))}, in "
                        rf"use by another lensllm run \(PID {first.pid} on host \S+, {SINCE}\)",
                        lines[0])
    assert re.fullmatch(rf"took over the run directory's lock, left by a run that ended "
                        rf"without releasing it \(PID {first.pid} on host \S+, {SINCE}\)",
                        lines[1])
    # nothing A finished was computed again
    with Store(run_dir, invocation="reader") as store:
        starts = [e["invocation"] for e in store.events("start")]
        submitted = {e["key"] for e in store.events("submit") if e["invocation"] == starts[-1]}
    assert len(starts) == 2 and not submitted & done_by_first
    # plain progress (stderr is not a terminal): what the store gave, what ran, ETA
    assert "zero-shot losses: all 3 job(s) reused from the store" in lines
    assert any(re.fullmatch(r"\[1/\d\] fine-tuning: d\S+ @ \d+ done \(elapsed [\d.]+ s, "
                            r"ETA [\d.]+ s\)", ln) for ln in lines), lines
    summary = next(ln for ln in lines if ln.startswith("finished in "))
    reused = len(done_by_first)
    assert re.fullmatch(rf"finished in [\d.]+ s: {reused} job\(s\) reused from the store, "
                        rf"{15 - reused} computed", summary)
    assert (run_dir / "lock").read_text() == ""


# --------------------------------------------------------------------- orphans

def _assert_all_end(pids: list[int], timeout: float) -> float:
    """Seconds until every process in ``pids`` has ended (zombies count as ended)."""
    started = time.monotonic()
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            for pid in alive:  # do not leave them running after a failed test
                subprocess.run(["kill", "-9", str(pid)], check=False)
            raise AssertionError(f"still running {timeout:.0f} s after the coordinator was "
                                 f"killed: {alive}")
        time.sleep(0.1)


def _kill_coordinator_mid_run(config: Path, run_dir: Path, timeout: float) -> float:
    proc = subprocess.Popen(cli_args(config, run_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli_env())
    try:
        # a fine-tuning job is running in a worker (its heartbeat has a step)
        beats = run_dir / "records" / "heartbeat"
        _wait_for(lambda: any('"step"' in p.read_text() for p in beats.glob("*.json")),
                  "a fine-tuning heartbeat", proc=proc)
        children = descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(children) >= 2, children
    return _assert_all_end(children, timeout)


def test_pool_workers_die_with_a_killed_coordinator(micro, tmp_path):
    config = write_config(tmp_path, micro, ntk={"enabled": False},
                          executor={"kind": "local", "workers": 2, "retries": 1})
    # the parent-death signal ends them at once; the watchdog thread within a second
    assert _kill_coordinator_mid_run(config, tmp_path / "run", timeout=5) < 5


@pytest.mark.slow
def test_private_ray_dies_with_a_killed_coordinator(micro, tmp_path):
    pytest.importorskip("ray")
    config = write_config(tmp_path, micro, ntk={"enabled": False},
                          executor={"kind": "ray", "num_cpus": 1, "retries": 1})
    assert _kill_coordinator_mid_run(config, tmp_path / "run", timeout=30) < 30


# ---------------------------------------------------------------- a changed config

def test_a_changed_config_is_refused_unless_forced(micro, tmp_path):
    run_dir = tmp_path / "run"
    base = dict(ntk={"enabled": False})
    first = run_cli(write_config(tmp_path / "a", micro, **base), run_dir)
    assert first.returncode == 0, first.stderr[-3000:]

    training = {"batch_size": 8, "max_length": 32, "max_epochs": 3, "patience": 1,
                "eval_every": 2, "num_threads": 1}
    changed = write_config(tmp_path / "b", micro, target=1024, training=training, **base)
    out = run_cli(changed, run_dir, "--workers", "2")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (
        f"error: the run directory {str(run_dir)!r} holds a run of a different config "
        "(changed: target (512 -> 1024), training.max_epochs (2 -> 3)); rerun with --force "
        "to continue it with this config (finished jobs whose settings still match are "
        "reused), or choose a new run directory\n")

    retarget = write_config(tmp_path / "d", micro, target=1024, **base)
    forced = run_cli(retarget, run_dir, "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "warning: config changed (target (512 -> 1024)); continuing with it (--force)" in (
        forced.stderr.splitlines())
    assert json.loads(forced.stdout)["target"] == 1024
    with Store(run_dir, invocation="reader") as store:
        starts = [e["invocation"] for e in store.events("start")]
        assert len(starts) == 2
        # the jobs' keys did not change with the target: nothing was computed again
        assert not [e for e in store.events("submit") if e["invocation"] in starts[1:]]
        assert [e["detail"]["changes"] for e in store.events("config_changed")] == [
            ["target (512 -> 1024)"]]
    # the accepted config is now the run directory's; where the run executes does not
    # change its results, so another executor setting is no change
    again = run_cli(write_config(tmp_path / "e", micro, target=1024, **base,
                                 executor={"kind": "local", "workers": 1, "retries": 3}),
                    run_dir)
    assert again.returncode == 0, again.stderr[-3000:]


# ------------------------------------------------------------- unwritable folders

def test_unwritable_cache_dir_and_run_dir_are_one_error_line(micro, tmp_path):
    """A folder below a regular file cannot be created, by root either (chmod does not
    stop root, so a read-only folder would not test anything in CI)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = write_config(tmp_path, micro, cache_dir=str(blocker / "cache"))
    out = run_cli(config, tmp_path / "run")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"error: cannot write to the cache_dir {str(blocker / 'cache')!r} "
                          "(Not a directory); choose a writable folder (cache_dir in the "
                          "config)\n")
    out = run_cli(write_config(tmp_path, micro), blocker / "run")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"error: cannot write to the run directory {str(blocker / 'run')!r} "
                          "(Not a directory); choose a writable folder (--run-dir or run_dir "
                          "in the config)\n")
