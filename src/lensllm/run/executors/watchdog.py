"""Workers end with their coordinator, however it ends (``kill -9`` included).

A pool or Ray worker left running after its coordinator died keeps hundreds of
megabytes (and, on a GPU machine, a GPU) busy for a job nobody will collect.  Two
layers, both set up inside the worker:

* Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` -- the kernel kills the worker the moment
  its parent dies.  The signal follows the death of the parent *thread* that started
  the worker: the local pool starts its workers from the coordinator's main thread.
* everywhere: a daemon thread that checks every second that the coordinator still
  exists and ends the worker when it does not.  It covers the processes whose parent
  is not the coordinator (a Ray worker's parent is Ray's raylet) and systems without
  ``prctl``.

A private local Ray adds processes that are not ours to set up: Ray shares the fate of
its raylet and GCS with the driver, but the raylet's agents (``DashboardAgent``,
``RuntimeEnvAgent``) were measured still running 30 s after the driver's ``kill -9``.
For them, :func:`start_reaper` starts a small process that outlives the coordinator:
it keeps a list of the coordinator's descendants and kills them when the coordinator
dies (it learns that from the end of a pipe, which the kernel closes).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
#: how often the watchdog thread looks for the coordinator
POLL_S = 1.0
#: exit status of a worker that ended because its coordinator was gone
ORPHAN_EXIT = 75
# coordinators this process already watches (a Ray worker runs many tasks)
_WATCHED: set[int] = set()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # an ended process its parent has not reaped yet is a zombie: gone for us
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): kill(pid, 0) is all there is
        return True


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(coordinator: int, direct_parent: bool) -> None:
    while True:
        time.sleep(POLL_S)
        gone = (os.getppid() != coordinator) if direct_parent else not pid_alive(coordinator)
        if gone:
            os._exit(ORPHAN_EXIT)


def die_with_coordinator(coordinator: int, *, direct_parent: bool) -> None:
    """End this worker process when the process ``coordinator`` ends.

    ``direct_parent``: the coordinator is this process's parent (a pool worker), so the
    kernel's parent-death signal applies and re-parenting is the sign of its death;
    otherwise (a Ray worker on the coordinator's host) only the watchdog thread does.
    """
    if coordinator in _WATCHED:
        return
    _WATCHED.add(coordinator)
    if direct_parent:
        _set_parent_death_signal()
        if os.getppid() != coordinator:  # it died before the signal was armed
            os._exit(ORPHAN_EXIT)
    elif not pid_alive(coordinator):
        os._exit(ORPHAN_EXIT)
    threading.Thread(target=_watch, args=(coordinator, direct_parent), daemon=True,
                     name="lensllm-watchdog").start()


# ------------------------------------------------------------------------ the reaper

def descendants(root: int) -> dict[int, str]:
    """pid -> start time (to tell a reused pid apart) of every process below ``root``."""
    children: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(fields[1]), []).append((int(stat.parent.name), fields[19]))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            out[pid] = started
            todo.append(pid)
    return out


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def reap(coordinator: int, poll_s: float = 0.5) -> None:
    """The reaper's loop (its own process): remember the coordinator's descendants; when
    standard input ends without a ``bye`` line, the coordinator died: kill them."""
    me = os.getpid()
    known: dict[int, str] = {}
    while True:
        known = {p: t for p, t in descendants(coordinator).items() if p != me} or known
        ready, _, _ = select.select([sys.stdin], [], [], poll_s)
        if not ready:
            continue
        line = sys.stdin.readline()
        if line.strip() == "bye":
            return  # the coordinator shut its Ray down itself
        if line:
            continue
        for pid, started in known.items():
            if _start_time(pid) == started:  # the same process, not a reused pid
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        return


def start_reaper() -> subprocess.Popen | None:
    """A process that kills this process's descendants if this process dies without
    calling :func:`stop_reaper` (Linux only: it reads /proc; None elsewhere)."""
    if not Path("/proc/self/stat").exists():
        return None
    code = f"from lensllm.run.executors.watchdog import reap; reap({os.getpid()})"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)  # a Ctrl-C of the run leaves it alone


def stop_reaper(reaper: subprocess.Popen | None) -> None:
    """Tell the reaper that the coordinator ends normally, and let it go."""
    if reaper is None:
        return
    with contextlib.suppress(OSError, ValueError):
        reaper.stdin.write("bye\n")  # type: ignore[union-attr]
        reaper.stdin.close()  # type: ignore[union-attr]
    try:
        reaper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reaper.kill()
