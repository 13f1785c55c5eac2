"""How disturbed the host was during one run, and the rule that excludes a disturbed run.

Logged per run (report.json `runs[].host`):

- `psi_some_ratio`: host /proc/pressure/cpu "some" total over the run / run seconds (the share of
  time some runnable task waited for a CPU; our own replicas' contention counts too), and
  `psi_some_avg10` at the run's end;
- `steal_ratio`: /proc/stat steal jiffies / all jiffies over the run (the hypervisor took them);
- `foreign_cpu_cores`: CPU the host spent outside this benchmark, per second: user + system +
  irq + softirq jiffies minus the benchmark's own (the sandbox's cpuacct user/system and the
  controller process's rusage). User time of niced processes (the `nice` column: background
  builds at nice > 0) is left out: CFS weights make them yield to the sandbox (nice 19 weighs 15
  against a sandbox's 1024 x CPUs). When the benchmark itself runs niced, its user time is in
  that column too, so only its system time is subtracted.

The exclusion rule (fixed before any run, `ExclusionRule`): a run is disturbed when
`foreign_cpu_cores` > `max_foreign_cpu_cores` (0.5 core) or `steal_ratio` > `max_steal_ratio`
(5 %). A disturbed run is kept in `runs` with `excluded` naming the reason, left out of the
summary, and its pair is left out of every comparison.
"""

from __future__ import annotations

import os
import resource
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


class OwnCpu:
    """Cumulative (user, system) CPU seconds of the benchmark: a cgroup tree (v1 cpuacct.stat,
    v2 cpu.stat) plus this process; `niced` when this process runs at nice > 0."""

    def __init__(self, cgroup_dir: str | None, v2: bool) -> None:
        self.dir, self.v2 = cgroup_dir, v2
        self.niced = os.getpriority(os.PRIO_PROCESS, 0) > 0

    def read(self) -> tuple[float, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        user, system = ru.ru_utime, ru.ru_stime
        if self.dir:
            name = "cpu.stat" if self.v2 else "cpuacct.stat"
            try:
                with open(os.path.join(self.dir, name)) as f:
                    kv = dict(ln.split() for ln in f if len(ln.split()) == 2)
            except OSError:
                kv = {}
            if self.v2:
                user += int(kv.get("user_usec", 0)) / 1e6
                system += int(kv.get("system_usec", 0)) / 1e6
            else:
                user += int(kv.get("user", 0)) / CLK_TCK
                system += int(kv.get("system", 0)) / CLK_TCK
        return user, system


def disturbance(before: HostSnapshot, after: HostSnapshot, own_user_s: float,
                own_system_s: float, own_niced: bool = False) -> dict:
    """The `host` block of a run from snapshots around it and the benchmark's own CPU."""
    dt = max(1e-9, after.mono - before.mono)
    own_cpu_seconds = own_system_s + (0.0 if own_niced else own_user_s)
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
