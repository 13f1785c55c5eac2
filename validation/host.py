"""How disturbed the host was during one run, and the rule that excludes a disturbed run.

Logged per run (report.json `runs[].host`):

- `psi_some_ratio`: host /proc/pressure/cpu "some" total over the run / run seconds (the share of
  time some runnable task waited for a CPU; our own replicas' contention counts too), and
  `psi_some_avg10` at the run's end;
- `steal_ratio`: /proc/stat steal jiffies / all jiffies over the run (the hypervisor took them);
- `foreign_cpu_cores`: CPU the host spent outside this benchmark's sandbox (user + system + irq +
  softirq jiffies, minus the sandbox's own cpuacct usage), per second. Time of niced processes
  (the `nice` column: background builds at nice > 0) is left out: CFS weights make them yield to
  the sandbox (nice 19 weighs 15 against a sandbox's 1024 × CPUs).

The exclusion rule (fixed before any run, `ExclusionRule`): a run is disturbed when
`foreign_cpu_cores` > `max_foreign_cpu_cores` (0.5 core) or `steal_ratio` > `max_steal_ratio`
(5 %). A disturbed run is kept in `runs` with `excluded` naming the reason, left out of the
summary, and its pair is left out of every comparison.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class HostSnapshot:
    mono: float
    busy_jiffies: int  # user + system + irq + softirq (not nice, idle, iowait, steal)
    steal_jiffies: int
    all_jiffies: int
    psi_some_us: int | None  # None: no PSI on this kernel
    psi_some_avg10: float | None


def parse_proc_stat(text: str) -> tuple[int, int, int]:
    """(busy, steal, all) jiffies from /proc/stat's aggregate `cpu` line."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]] + [0] * 10
            user, _nice, system, idle, iowait, irq, softirq, steal = v[:8]
            return user + system + irq + softirq, steal, sum(v[:8])
    raise ValueError("no aggregate `cpu` line in /proc/stat")


def parse_psi(text: str) -> tuple[int, float] | None:
    """(some total µs, some avg10 %) from /proc/pressure/cpu."""
    for line in text.splitlines():
        if line.startswith("some "):
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            return int(kv["total"]), float(kv["avg10"])
    return None


def snapshot(proc: str = "/proc") -> HostSnapshot:
    with open(os.path.join(proc, "stat")) as f:
        busy, steal, total = parse_proc_stat(f.read())
    psi = None
    try:
        with open(os.path.join(proc, "pressure", "cpu")) as f:
            psi = parse_psi(f.read())
    except OSError:
        pass
    return HostSnapshot(time.monotonic(), busy, steal, total,
                        psi[0] if psi else None, psi[1] if psi else None)


def disturbance(before: HostSnapshot, after: HostSnapshot, own_cpu_seconds: float) -> dict:
    """The `host` block of a run from snapshots around it and the sandbox's CPU seconds."""
    dt = max(1e-9, after.mono - before.mono)
    busy = (after.busy_jiffies - before.busy_jiffies) / CLK_TCK
    total = max(1, after.all_jiffies - before.all_jiffies)
    psi = None
    if before.psi_some_us is not None and after.psi_some_us is not None:
        psi = (after.psi_some_us - before.psi_some_us) / 1e6 / dt
    return {"seconds": dt,
            "foreign_cpu_cores": max(0.0, (busy - own_cpu_seconds) / dt),
            "steal_ratio": (after.steal_jiffies - before.steal_jiffies) / total,
            "psi_some_ratio": psi, "psi_some_avg10": after.psi_some_avg10}


@dataclass(frozen=True)
class ExclusionRule:
    max_foreign_cpu_cores: float = 0.5
    max_steal_ratio: float = 0.05

    def reason(self, host: dict) -> str | None:
        """Why a run with this `host` block is excluded (None: kept)."""
        why = []
        if host["foreign_cpu_cores"] > self.max_foreign_cpu_cores:
            why.append(f"foreign CPU {host['foreign_cpu_cores']:.2f} cores > "
                       f"{self.max_foreign_cpu_cores:g}")
        if host["steal_ratio"] > self.max_steal_ratio:
            why.append(f"steal {host['steal_ratio']:.1%} > {self.max_steal_ratio:.0%}")
        return "; ".join(why) or None

    def to_json(self) -> dict:
        return {"max_foreign_cpu_cores": self.max_foreign_cpu_cores,
                "max_steal_ratio": self.max_steal_ratio}
