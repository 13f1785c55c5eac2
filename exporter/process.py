"""The agent's own process_* metrics, as client_python's ProcessCollector names and means them
(the metric contract and the dashboard read them), from /proc/self without that package."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

from runqscale.exporter.families import RowFamily, single


def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


def _max_fds() -> float:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # a syscall, not a file to parse
    return float("inf") if soft == resource.RLIM_INFINITY else float(soft)


def _open_fds() -> int:
    """Open descriptors: Linux >= 6.2 gives the count as the directory's size, without listing
    the two per container the agent keeps open (probes/cgroupfs.py); older kernels say 0."""
    n = os.stat("/proc/self/fd").st_size
    return n if n > 0 else len(os.listdir("/proc/self/fd"))


class ProcessCollector:
    def __init__(self) -> None:
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._btime = _boot_time()

    def describe(self) -> list[RowFamily]:
        return []

    def collect(self) -> Iterator[RowFamily]:
        try:
            with open("/proc/self/stat", "rb") as f:
                # fields after the command name, which may itself hold spaces and parentheses
                parts = f.read().rsplit(b")", 1)[1].split()
            fds = _open_fds()
            max_fds = _max_fds()
        except OSError:
            return  # no procfs: the agent's own figures are missing, the rest is served
        utime, stime = int(parts[11]), int(parts[12])
        yield single("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
                     float(parts[20]))
        yield single("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
                     float(int(parts[21]) * self._page))
        yield single("process_start_time_seconds",
                     "Start time of the process since unix epoch in seconds.", "gauge",
                     int(parts[19]) / self._ticks + self._btime)
        yield single("process_cpu_seconds", "Total user and system CPU time spent in seconds.",
                     "counter", (utime + stime) / self._ticks)
        yield single("process_open_fds", "Number of open file descriptors.", "gauge",
                     float(fds))
        yield single("process_max_fds", "Maximum number of open file descriptors.", "gauge",
                     max_fds)
