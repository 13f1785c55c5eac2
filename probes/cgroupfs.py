"""The cgroup filesystem: which hierarchy to measure, cgroup id <-> path, CPU stat files.

A cgroup id is the kernfs node id of its directory, which is also the directory's inode number,
so ids resolve to paths with a stat() walk. v1 and v2 ids come from different hierarchies and are
never mixed: one probe instance measures exactly one hierarchy.
"""

from __future__ import annotations

import os
import threading
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
        # one string per cgroup path, shared by the walks and the watch (agent/cgroupwatch.py):
        # ~1000 paths at 500 containers would otherwise be held twice or more. Not sys.intern:
        # CPython 3.12.0-3.12.5 never frees interned strings, and cgroups come and go.
        self._paths: dict[str, str] = {}
        self._last_walk = -1e9
        self._min_rescan_s = min_rescan_s
        self.walks = 0

    def walk(self) -> None:
        found: dict[int, str] = {}
        stack = [(self.root, "/")]
        while stack:
            path, rel = stack.pop()
            try:
                found[os.stat(path).st_ino] = self.shared(rel)
                with os.scandir(path) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            stack.append((e.path, rel.rstrip("/") + "/" + e.name))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue  # vanished while walking: it is gone, which is fine
        self._by_id = found
        self._paths = {rel: rel for rel in found.values()}  # only the paths that still exist
        self._last_walk = time.monotonic()
        self.walks += 1

    def shared(self, rel: str) -> str:
        """The index's own copy of the path `rel` (this one if it has none yet)."""
        return self._paths.setdefault(rel, rel)

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


def _keyvals(raw: bytes | None) -> dict[bytes, int]:
    """`key value` lines (cpu.stat) as a dict; a value that is not an integer is left out."""
    out: dict[bytes, int] = {}
    for line in (raw or b"").split(b"\n"):
        key, _, value = line.partition(b" ")
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out


def _pressure_some_seconds(raw: bytes | None) -> float | None:
    for line in (raw or b"").splitlines():
        if line.startswith(b"some "):
            try:
                return int(line.rsplit(b"total=", 1)[-1]) / 1e6
            except ValueError:
                return None
    return None  # absent, or PSI disabled


def _cpu_files(mounts: CgroupMounts, hierarchy: Hierarchy, rel: str) -> tuple[str, str | None]:
    """The two files a CpuStat comes from: cpu.stat, and cpu.pressure (v2) or cpuacct.usage
    (v1, None without a cpuacct hierarchy)."""
    rel = rel.lstrip("/")
    if hierarchy is Hierarchy.V2:
        base = os.path.join(mounts.v2 or "", rel)
        return os.path.join(base, "cpu.stat"), os.path.join(base, "cpu.pressure")
    acct = os.path.join(mounts.v1_cpuacct, rel, "cpuacct.usage") if mounts.v1_cpuacct else None
    return os.path.join(mounts.v1_cpu or "", rel, "cpu.stat"), acct


def _cpu_stat(hierarchy: Hierarchy, stat: bytes | None, other: bytes | None) -> CpuStat | None:
    """A CpuStat from the two files' contents (_cpu_files); None when cpu.stat is empty or
    absent (the cgroup is gone)."""
    st = _keyvals(stat)
    if not st:
        return None
    if hierarchy is Hierarchy.V2:
        return CpuStat(
            usage_seconds=st[b"usage_usec"] / 1e6 if b"usage_usec" in st else None,
            nr_periods=st.get(b"nr_periods"),
            nr_throttled=st.get(b"nr_throttled"),
            throttled_seconds=st[b"throttled_usec"] / 1e6 if b"throttled_usec" in st else None,
            pressure_some_seconds=_pressure_some_seconds(other),
        )
    try:
        usage = int(other) / 1e9 if other else None
    except ValueError:
        usage = None
    return CpuStat(
        usage_seconds=usage,
        nr_periods=st.get(b"nr_periods"),
        nr_throttled=st.get(b"nr_throttled"),
        throttled_seconds=st[b"throttled_time"] / 1e9 if b"throttled_time" in st else None,
        pressure_some_seconds=None,  # cgroup v1 has no per-cgroup PSI
    )


def read_cpu_stat(mounts: CgroupMounts, hierarchy: Hierarchy, rel: str) -> CpuStat | None:
    """None when the cgroup is gone."""
    stat, other = _cpu_files(mounts, hierarchy, rel)
    raw = _read(stat)
    if raw is None:
        return None
    return _cpu_stat(hierarchy, raw, _read(other) if other else None)


class CpuStatReader:
    """read_cpu_stat for a scrape of every container, with each tracked cgroup's two files kept
    open between reads: a read is then two pread() calls at offset 0 (cgroup files are
    seq_files, regenerated on every read from 0). Opening them cost more than the rest of a
    scrape's CPU accounting together: the path walk of ~6 long components, twice per container
    (14 ms of CPU per scrape of 500 containers; 2.5 ms with the files open).

    The price is kernel memory: an open cgroup file that has been read keeps a 4 KB seq_file
    buffer and its struct file, ~4.2 MB for 500 containers (measured: 992 kmalloc-cg-4k and
    908 filp objects for 1000 files), charged to the agent's memory cgroup and not in its RSS.
    A removed cgroup is not kept alive by them (its files answer ENODEV), but their memory is,
    so they are closed as soon as a read finds the cgroup gone, and by `forget`.

    Only paths the agent `track`s keep files open (a scrape of an older snapshot may still ask
    for a path the agent has just forgotten: that read opens and closes), at most `max_open`
    of them (two descriptors each); the others are read by open/read/close. Thread-safe:
    scrapes run in their own threads."""

    def __init__(self, mounts: CgroupMounts, hierarchy: Hierarchy, max_open: int) -> None:
        self.mounts, self.hierarchy, self.max_open = mounts, hierarchy, max(0, max_open)
        self._fds: dict[str, tuple[int, int]] = {}  # rel -> (cpu.stat, other or -1)
        self._tracked: dict[str, int] = {}  # rel -> containers the agent tracks at it
        self._lock = threading.Lock()
        self.opens = 0  # cgroups whose files were opened and kept, ever (each a path walk)

    def track(self, rel: str) -> None:
        """The agent tracks a container at this path: its files may stay open."""
        with self._lock:
            self._tracked[rel] = self._tracked.get(rel, 0) + 1

    def forget(self, rel: str) -> None:
        """The agent dropped a container at this path (or it moved away): once no tracked
        container is left there, its files close."""
        with self._lock:
            n = self._tracked.get(rel, 0) - 1
            if n > 0:
                self._tracked[rel] = n
                return
            self._tracked.pop(rel, None)
            self._close(rel)

    def __call__(self, rel: str) -> CpuStat | None:
        with self._lock:
            fds = self._fds.get(rel)
            if fds is not None:
                stat = _pread(fds[0])
                if stat is not None:
                    return self._with_other(stat, fds[1])
                self._close(rel)  # removed (or replaced by a new cgroup of the same name)
            if rel not in self._tracked or len(self._fds) >= self.max_open:
                return read_cpu_stat(self.mounts, self.hierarchy, rel)
            fds = self._open(rel)
            if fds is None:
                return read_cpu_stat(self.mounts, self.hierarchy, rel)  # says gone or reads it
            stat = _pread(fds[0])
            if stat is None:  # removed since the open
                for fd in fds:
                    if fd >= 0:
                        os.close(fd)
                return None
            self._fds[rel] = fds
            self.opens += 1
            return self._with_other(stat, fds[1])

    def _with_other(self, stat: bytes, other_fd: int) -> CpuStat | None:
        return _cpu_stat(self.hierarchy, stat, _pread(other_fd) if other_fd >= 0 else None)

    def _open(self, rel: str) -> tuple[int, int] | None:
        """Both files, the second as -1 where it does not exist (no cpuacct hierarchy, no PSI);
        None when either cannot be opened for another reason (gone, out of descriptors)."""
        stat, other = _cpu_files(self.mounts, self.hierarchy, rel)
        try:
            sfd = os.open(stat, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            ofd = os.open(other, os.O_RDONLY | os.O_CLOEXEC) if other else -1
        except FileNotFoundError:
            ofd = -1
        except OSError:
            os.close(sfd)
            return None
        return sfd, ofd

    def _close(self, rel: str) -> None:
        for fd in self._fds.pop(rel, ()):
            if fd >= 0:
                os.close(fd)

    def open_count(self) -> int:
        """Cgroups whose files are open now."""
        return len(self._fds)

    def close(self) -> None:
        with self._lock:
            for rel in list(self._fds):
                self._close(rel)


def _pread(fd: int) -> bytes | None:
    """The whole of a small cgroupfs file from offset 0; None once its cgroup is removed
    (ENODEV) or the file cannot be read (e.g. cpu.pressure with PSI disabled)."""
    try:
        return os.pread(fd, 16384, 0) or None
    except OSError:
        return None


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
