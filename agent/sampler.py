"""One interval of measurement: probe histograms joined with each cgroup's CPU accounting.

`Sampler.sample()` reads the probe's cumulative per-cgroup histograms, resolves ids to paths,
reads cpu.stat / cpu.pressure for those cgroups, and returns per-cgroup deltas since the previous
call. Cgroups that vanished are dropped from the BPF map and from its own state; ids that do not
resolve are counted as attribution misses, never guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from runqscale.probes.backends import Probe
from runqscale.probes.cgroupfs import (
    CgroupIndex,
    CgroupMounts,
    CpuStat,
    read_cpu_stat,
    throttled_ratio,
)
from runqscale.probes.model import (
    SLOTS,
    CgroupHistogram,
    ProbeReading,
    ProbeStats,
    RowsReading,
    quantile_seconds,
    rows_reading,
)


@dataclass(frozen=True)
class CgroupSample:
    """What one cgroup did during one interval."""

    cgroup_id: int
    path: str  # relative to the measured hierarchy's root
    total: CgroupHistogram  # cumulative since the probe was loaded
    before: CgroupHistogram | None  # ... at the previous sample (None: first sight)
    cpu: CpuStat | None  # cumulative accounting now
    cpu_before: CpuStat | None  # ... and at the previous sample

    @cached_property
    def delta(self) -> CgroupHistogram:
        """Waits in this interval; computed on first use (the agent only keeps `total`)."""
        return self.total.minus(self.before)

    @property
    def events(self) -> int:
        return int(self.delta.count)

    @property
    def wait_seconds(self) -> float:
        return self.delta.sum_ns / 1e9

    def quantile(self, q: float) -> float | None:
        return quantile_seconds(self.delta.slots, q)

    @property
    def throttled_ratio(self) -> float | None:
        return throttled_ratio(self.cpu_before, self.cpu)


@dataclass(frozen=True)
class Interval:
    seconds: float
    reading: ProbeReading
    cgroups: list[CgroupSample]
    unresolved_events: int  # waits in cgroups whose id did not resolve to a path
    removed: int  # cgroups dropped because they vanished


@dataclass(frozen=True)
class RowsInterval:
    """One interval as the agent takes it: the cumulative rows of the cgroups it keeps (resolved,
    selected, alive), no object per cgroup."""

    monotonic_s: float
    stats: ProbeStats
    ids: list[int]
    paths: list[str]
    rows: np.ndarray  # uint64 (len(ids), VALUE_WORDS), cumulative since the probe was loaded
    held: list[bool]  # per row: whether the backend splits the wait by holder
    unresolved_events: int
    removed: int


@dataclass
class _Decisions:
    """What one read's per-cgroup decisions add up to."""

    unresolved: int = 0  # waits in ids that did not resolve to a path
    undecided: int = 0  # ids left for a later read to decide (unresolved, not yet gone)
    gone: list[int] = field(default_factory=list)


class Sampler:
    def __init__(self, probe: Probe, mounts: CgroupMounts, root: str,
                 only: list[str] | None = None, read_cpu: bool = True,
                 index: CgroupIndex | None = None) -> None:
        # read_cpu=False: skip cpu.stat (the agent reads it at scrape time instead); a cgroup
        # with waits this interval is taken to exist, the others are checked with one stat().
        # index: a caller's own index of `root` (the agent's inotify-fed one), else a plain one.
        self.probe, self.mounts, self.read_cpu = probe, mounts, read_cpu
        self.index = index or CgroupIndex(root)
        self.index.walk()
        self.only = {"/" + p.strip("/") for p in only} if only else None
        self._prev: ProbeReading | None = None
        # sample_rows(): the previous map read's keys and counts, and its outcome when nothing
        # needed a decision (every id resolved, none gone): the steady state, see _unchanged()
        self._prev_keys: list[int] = []
        self._prev_counts = np.zeros(0, dtype=np.uint64)
        self._settled: tuple[np.ndarray | None, list[int], list[str], list[bool]] | None = None
        self._cpu: dict[int, CpuStat | None] = {}
        self._missing_since: dict[int, int] = {}

    def sample(self) -> Interval:
        reading = self.probe.read()
        prev = self._prev
        seconds = reading.monotonic_s - prev.monotonic_s if prev else 0.0
        out: list[CgroupSample] = []
        d = _Decisions()
        for cid, total in reading.histograms.items():
            before = prev.histograms.get(cid) if prev else None
            waits = total.count - before.count if before else total.count
            if waits < 0:  # the kernel entry was re-created: its counts started over
                waits = total.count
            # reading cpu.stat already tells whether the cgroup exists: no stat() before it
            path = self._decide(cid, waits, d, check_idle=not self.read_cpu)
            if path is None:
                continue
            cpu = read_cpu_stat(self.mounts, self.probe.hierarchy, path) if self.read_cpu \
                else None
            if self.read_cpu and cpu is None and not self.index.exists(path):
                d.gone.append(cid)
                if waits:  # removed since it waited: its last waits still belong to it, once
                    last = self._cpu.get(cid)
                    out.append(CgroupSample(cid, path, total, before, last, last))
                continue
            out.append(CgroupSample(cid, path, total, before, cpu, self._cpu.get(cid)))
            self._cpu[cid] = cpu
        self._forget(d.gone)
        self._prev = reading
        return Interval(seconds, reading, out, d.unresolved, len(d.gone))

    def sample_rows(self) -> RowsInterval:
        """sample() for the agent, which reads cpu.stat at scrape time (read_cpu=False) and
        keeps cumulative rows: the same selection, unresolved count and removal, with only
        dict lookups per cgroup (a cgroup with waits exists; an idle one is asked of the index,
        which knows without a stat() when it watches the tree)."""
        read = getattr(self.probe, "read_rows", None)
        reading: RowsReading = read() if read else rows_reading(self.probe.read())
        counts = reading.counts if reading.counts is not None else \
            reading.rows[:, :SLOTS].sum(axis=1, dtype=np.uint64)
        fast = self._unchanged(reading.keys, counts)
        if fast is not None:
            return RowsInterval(reading.monotonic_s, reading.stats, fast[1], fast[2],
                                reading.rows if fast[0] is None else reading.rows[fast[0]],
                                fast[3], 0, 0)
        prev = dict(zip(self._prev_keys, self._prev_counts.tolist(), strict=True))
        keep: list[int] = []
        ids: list[int] = []
        paths: list[str] = []
        d = _Decisions()
        for i, (cid, n) in enumerate(zip(reading.keys, counts.tolist(), strict=True)):
            before = prev.get(cid, 0)
            waits = n - before if n >= before else n  # fewer: the entry was re-created
            path = self._decide(cid, waits, d)
            if path is None:
                continue
            keep.append(i)
            ids.append(cid)
            paths.append(path)
        self._prev_keys, self._prev_counts = reading.keys, counts
        held = [reading.held[i] for i in keep]
        all_kept = len(keep) == len(reading.keys)
        keep_idx = None if all_kept else np.asarray(keep, dtype=np.intp)
        # Remember the outcome only when every id was decided for good (resolved, not gone).
        self._settled = (keep_idx, ids, paths, held) if not d.undecided and not d.gone else None
        self._forget(d.gone)
        return RowsInterval(reading.monotonic_s, reading.stats, ids, paths,
                            reading.rows if keep_idx is None else reading.rows[keep_idx], held,
                            d.unresolved, len(d.gone))

    def _unchanged(self, keys: list[int], counts: np.ndarray
                   ) -> tuple[np.ndarray | None, list[int], list[str], list[bool]] | None:
        """The previous outcome, when this read has the very same ids in the same order (the
        hash map's order holds while nothing is inserted or deleted), no count went down, and
        every kept cgroup that did not wait still exists: then nothing needs a decision and the
        interval costs no Python per cgroup. None: decide id by id."""
        settled = self._settled
        if settled is None or keys != self._prev_keys:
            return None
        prev = self._prev_counts
        if (counts < prev).any():
            return None
        keep_idx, _, paths, _ = settled
        idle = counts == prev if keep_idx is None else (counts == prev)[keep_idx]
        for j in np.flatnonzero(idle).tolist():
            if not self.index.exists(paths[j]):
                return None
        self._prev_counts = counts
        return settled

    def _decide(self, cid: int, waits: int, d: _Decisions, check_idle: bool = True
                ) -> str | None:
        """The one decision both reads make per cgroup: its path when this interval keeps it,
        else None — an id that does not resolve (its waits count as unresolved; it is gone
        once it is missing from two walks, or when the root itself went), one outside the
        `only` filter, or an idle one that no longer exists (gone; `check_idle=False` leaves
        that to a caller whose own read tells it). A cgroup that waited this interval exists:
        no stat() for it."""
        path = self.index.path_of(cid)
        if path is None:
            if not os.path.exists(self.index.root) or self._is_gone(cid):
                d.gone.append(cid)
            d.unresolved += waits
            d.undecided += 1
            return None
        if self.only is not None and not self._selected(path):
            return None
        if check_idle and not waits and not self.index.exists(path):
            d.gone.append(cid)
            return None
        return path

    def _forget(self, gone: list[int]) -> None:
        """Drop removed cgroups from the BPF map and from every per-cgroup state here."""
        if not gone:
            return
        self.probe.forget(gone)
        for cid in gone:
            self._cpu.pop(cid, None)
            self._missing_since.pop(cid, None)
            self.index.forget(cid)

    def _selected(self, path: str) -> bool:
        assert self.only is not None
        return any(path == p or path.startswith(p + "/") for p in self.only)

    def _is_gone(self, cid: int) -> bool:
        """An id missing from two walks in a row is a removed cgroup (one miss may be a race)."""
        n = self._missing_since.get(cid, 0) + 1
        self._missing_since[cid] = n
        return n >= 2

