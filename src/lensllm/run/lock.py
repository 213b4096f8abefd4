"""One ``lensllm run`` per run directory at a time: an exclusive lock on ``<run_dir>/lock``.

Two coordinators on one run directory would compute the same jobs twice and overwrite
each other's report.  The lock is an ``flock`` on the file ``lock``: the kernel releases
it when its holder ends in any way (``kill -9`` included), so a lock left behind by a
killed run is never mistaken for a live one -- no PID guessing.  The holder writes its
PID, host and start time into the file for the message a second run prints; a clean exit
empties the file, so a file still naming a holder while nobody holds the lock was left by
a run that died, and the next run says so as it takes over.

POSIX only (``fcntl``); ``flock`` also works on NFS mounts of current Linux kernels.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lensllm.errors import InputError

LOCK_NAME = "lock"
#: how often a waiting run checks the lock again (flock cannot wait with a timeout)
WAIT_POLL_S = 0.5


def _describe(holder: dict[str, Any]) -> str:
    since = holder.get("since")
    when = (time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(since))
            if isinstance(since, int | float) else "an unknown time")
    return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"since {when}")


def ensure_writable(folder: Path, what: str, hint: str) -> None:
    """Create ``folder`` if needed and check that a file can be written in it (a real
    write, not permission bits: those do not stop root, a read-only mount does).

    ``what`` names the folder and ``hint`` says where to change it, in the one-line
    error raised when it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".lensllm-write-check-"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write to the {what} {str(folder)!r} ({exc.strerror}); "
                         f"choose a writable folder ({hint})") from None


class RunLock:
    """The lock of one run directory; :meth:`acquire` it, :meth:`release` it (or use it
    as a context manager).

    ``wait=False`` refuses at once with an :class:`InputError` naming the holder;
    ``wait=True`` blocks until the holder ends, telling ``notify`` once that it waits.
    ``notify`` also hears that a lock left by a killed run was taken over.
    """

    def __init__(self, run_dir: str | Path, *, wait: bool = False,
                 notify: Callable[[str], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.wait = wait
        self.notify = notify or (lambda text: None)
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its (last) holder; {} if nothing readable."""
        try:
            data = json.loads(self.path.read_text("utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> RunLock:
        ensure_writable(self.run_dir, "run directory", "--run-dir or run_dir in the config")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot open the run directory's lock file {str(self.path)!r} "
                             f"({exc.strerror}); remove it if it is not a file") from None
        try:
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        left = self.holder()
        if left.get("pid"):
            self.notify(f"took over the run directory's lock, left by a run that ended "
                        f"without releasing it ({_describe(left)})")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "argv": sys.argv[1:]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        return self

    def _lock(self, fd: int) -> None:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            holder = _describe(self.holder())
            if not self.wait:
                raise InputError(f"the run directory {str(self.run_dir)!r} is in use by "
                                 f"another lensllm run ({holder}); wait for it to end "
                                 "(--wait) or choose another run directory") from None
            if not told:
                self.notify(f"waiting for the run directory {str(self.run_dir)!r}, in use "
                            f"by another lensllm run ({holder})")
                told = True
            # Polling rather than a blocking flock: Ctrl-C stays responsive.
            time.sleep(WAIT_POLL_S)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):  # an empty file: released cleanly
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
