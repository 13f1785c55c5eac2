"""The cgroup filesystem: which hierarchy to measure, cgroup id <-> path, CPU stat files.

A cgroup id is the kernfs node id of its directory, which is also the directory's inode number,
so ids resolve to paths with a stat() walk. v1 and v2 ids come from different hierarchies and are
never mixed: one probe instance measures exactly one hierarchy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from runqscale.probes.errors import ProbeError
from runqscale.probes.model import Hierarchy

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class CgroupMounts:
    v2: str | None  # cgroup2 mount point
    v1_cpu: str | None  # mount point of the v1 hierarchy that carries the cpu controller
    v1_cpuacct: str | None

    @classmethod
    def read(cls, mountinfo: str = MOUNTINFO) -> CgroupMounts:
        v2 = cpu = cpuacct = None
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) < 5 or len(rfields) < 3:
                    continue
                fstype, mountpoint, opts = rfields[0], fields[4], rfields[2].split(",")
                if fstype == "cgroup2" and v2 is None:
                    v2 = mountpoint
                elif fstype == "cgroup":
                    if "cpu" in opts and cpu is None:
                        cpu = mountpoint
                    if "cpuacct" in opts and cpuacct is None:
                        cpuacct = mountpoint
        return cls(v2, cpu, cpuacct)

    def choose(self, want: str = "auto") -> tuple[Hierarchy, str]:
        """auto: the v1 cpu hierarchy when the cpu controller lives there (hybrid nodes put CPU
        limits there), else cgroup2."""
        if want in ("auto", "v1") and self.v1_cpu:
            return Hierarchy.V1_CPU, self.v1_cpu
        if want in ("auto", "v2") and self.v2:
            return Hierarchy.V2, self.v2
        have = ", ".join(n for n, m in (("v1", self.v1_cpu), ("v2", self.v2)) if m) or "none"
        raise ProbeError(
            f"--hierarchy {want}: no such cgroup hierarchy is mounted (mounted: {have}); "
            "use --hierarchy auto or mount it"
        )


class CgroupIndex:
    """cgroup id -> path relative to the hierarchy root, refreshed by re-walking on a miss."""

    def __init__(self, root: str, min_rescan_s: float = 0.2) -> None:
        self.root = root.rstrip("/") or "/"
        self._by_id: dict[int, str] = {}
        self._last_walk = -1e9
        self._min_rescan_s = min_rescan_s
        self.walks = 0

    def walk(self) -> None:
        found: dict[int, str] = {}
        stack = [(self.root, "/")]
        while stack:
            path, rel = stack.pop()
            try:
                found[os.stat(path).st_ino] = rel
                with os.scandir(path) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            stack.append((e.path, rel.rstrip("/") + "/" + e.name))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue  # vanished while walking: it is gone, which is fine
        self._by_id = found
        self._last_walk = time.monotonic()
        self.walks += 1

    def path_of(self, cgroup_id: int) -> str | None:
        rel = self._by_id.get(cgroup_id)
        if rel is None and time.monotonic() - self._last_walk >= self._min_rescan_s:
            self.walk()
            rel = self._by_id.get(cgroup_id)
        return rel

    def abspath(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    def exists(self, rel: str) -> bool:
        """Whether the cgroup at rel is still there (one stat(); a watching index knows)."""
        return os.path.isdir(self.abspath(rel))

    def forget(self, cgroup_id: int) -> None:
        self._by_id.pop(cgroup_id, None)


@dataclass(frozen=True)
class CpuStat:
    """Cumulative CPU accounting of one cgroup; None where the hierarchy has no such file."""

    usage_seconds: float | None
    nr_periods: int | None
    nr_throttled: int | None
    throttled_seconds: float | None
    pressure_some_seconds: float | None  # cpu.pressure "some" total


def _read(path: str) -> bytes | None:
    """A small cgroupfs file in one read() (they fit in a page), without a buffered text file:
    the agent reads two or three per container per scrape. None when absent or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 16384)
    except OSError:
        return None  # e.g. cpu.pressure with PSI disabled: EOPNOTSUPP
    finally:
        os.close(fd)


def _keyvals(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_read(path) or b"").splitlines():
        key, _, value = line.partition(b" ")
        if value.isdigit() or (value[:1] == b"-" and value[1:].isdigit()):
            out[key.decode()] = int(value)
    return out


def _pressure_some_seconds(path: str) -> float | None:
    for line in (_read(path) or b"").splitlines():
        if line.startswith(b"some "):
            try:
                return int(line.rsplit(b"total=", 1)[-1]) / 1e6
            except ValueError:
                return None
    return None  # absent, or PSI disabled


def read_cpu_stat(mounts: CgroupMounts, hierarchy: Hierarchy, rel: str) -> CpuStat | None:
    """None when the cgroup is gone."""
    rel = rel.lstrip("/")
    if hierarchy is Hierarchy.V2:
        base = os.path.join(mounts.v2 or "", rel)
        st = _keyvals(os.path.join(base, "cpu.stat"))
        if not st:
            return None
        return CpuStat(
            usage_seconds=st["usage_usec"] / 1e6 if "usage_usec" in st else None,
            nr_periods=st.get("nr_periods"),
            nr_throttled=st.get("nr_throttled"),
            throttled_seconds=st["throttled_usec"] / 1e6 if "throttled_usec" in st else None,
            pressure_some_seconds=_pressure_some_seconds(os.path.join(base, "cpu.pressure")),
        )
    base = os.path.join(mounts.v1_cpu or "", rel)
    st = _keyvals(os.path.join(base, "cpu.stat"))
    if not st:
        return None
    usage = None
    if mounts.v1_cpuacct:
        raw = _read(os.path.join(mounts.v1_cpuacct, rel, "cpuacct.usage"))
        try:
            usage = int(raw) / 1e9 if raw else None
        except ValueError:
            usage = None
    return CpuStat(
        usage_seconds=usage,
        nr_periods=st.get("nr_periods"),
        nr_throttled=st.get("nr_throttled"),
        throttled_seconds=st["throttled_time"] / 1e9 if "throttled_time" in st else None,
        pressure_some_seconds=None,  # cgroup v1 has no per-cgroup PSI
    )


def throttled_ratio(before: CpuStat | None, after: CpuStat | None) -> float | None:
    """Share of CFS enforcement periods in which the cgroup hit its quota; None without quota
    data (no periods elapsed means no quota is being enforced: ratio 0)."""
    if not before or not after or after.nr_periods is None or before.nr_periods is None:
        return None
    periods = after.nr_periods - before.nr_periods
    if periods <= 0:
        return 0.0
    throttled = (after.nr_throttled or 0) - (before.nr_throttled or 0)
    return max(0.0, min(1.0, throttled / periods))
