"""Peak resident memory of the process over a block of code.

tracemalloc does not see torch's allocations, so we measure the resident set size (RSS):
a daemon thread samples it every ``interval`` seconds (from /proc/self/statm on Linux, else
psutil when installed), and when the block raised the process-lifetime high-water mark
``ru_maxrss`` that exact figure is used too.  Samples can miss spikes shorter than the
interval.  Without /proc and psutil only ``ru_maxrss`` is left, whose increase is a lower
bound (zero when an earlier peak of the process was higher).  Reported numbers are for the
whole process and include memory of other threads.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Callable
from types import TracebackType

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _statm_rss() -> int:
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * _PAGE


def _rss_reader() -> tuple[Callable[[], int] | None, str]:
    try:
        _statm_rss()
        return _statm_rss, "sampled /proc/self/statm RSS + ru_maxrss"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None, "ru_maxrss increase (lower bound)"
    process = psutil.Process()
    return (lambda: int(process.memory_info().rss)), "sampled psutil RSS + ru_maxrss"


def _max_rss() -> int:
    """Process-lifetime peak RSS in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class PeakMemory:
    """Context manager: ``peak_bytes`` and ``increase_bytes`` (peak minus RSS at entry)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self._read, self.method = _rss_reader()
        self.start_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        assert self._read is not None
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, self._read())

    def __enter__(self) -> PeakMemory:
        self._max_start = _max_rss()
        self.start_bytes = self._read() if self._read is not None else self._max_start
        self.peak_bytes = self.start_bytes
        if self._read is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self._read())
        max_end = _max_rss()
        if max_end > self._max_start:  # this block set a new process high-water mark
            self.peak_bytes = max(self.peak_bytes, max_end)

    @property
    def increase_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)
