"""The test harness's cgroup sandbox: the product's (scaler/actuators/cgroups.py) plus workload
programs (a CPU hog by default) and the kernel's own per-thread run-queue wait to check against."""

from __future__ import annotations

import os
import subprocess
import sys

from runqscale.scaler.actuators import cgroups
from runqscale.scaler.actuators.cgroups import CFS_PERIOD_US, Group, set_base_shares, set_shares

__all__ = ["CFS_PERIOD_US", "HOG", "IDLE", "PERIODIC", "Group", "Sandbox", "set_base_shares",
           "set_shares", "thread_run_delay_ns"]

# Workload programs, run with the current interpreter. Each is alive for the whole test so its
# /proc/<pid>/schedstat can be read at both ends of an interval.
HOG = "while True: pass"
PERIODIC = (
    "import time\n"
    "while True:\n"
    "    t = time.perf_counter()\n"
    "    while time.perf_counter() - t < {busy}: pass\n"
    "    time.sleep({sleep})\n"
)
IDLE = "import time\ntime.sleep(1e6)"


class Sandbox(cgroups.Sandbox):
    def spawn(self, g: Group, argv: list[str] | None = None,  # type: ignore[override]
              code: str | None = None, **popen: object) -> subprocess.Popen:
        """`argv`, else Python `code` (default: a CPU hog), in `g` from its first instruction."""
        return super().spawn(g, argv or [sys.executable, "-S", "-c", code or HOG], **popen)


def thread_run_delay_ns(pids: list[int]) -> dict[int, int]:
    """The kernel's own run-queue wait per thread (/proc/<pid>/task/<tid>/schedstat, 2nd field)."""
    out: dict[int, int] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    out[int(tid)] = int(f.read().split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
    return out
