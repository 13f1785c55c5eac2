"""The agent's scrape-time CPU accounting from cgroup files kept open (CpuStatReader) on real
cgroups: the counters are live, a removed cgroup's files close, a name made again is read anew,
a path the agent no longer tracks keeps nothing open, and past its descriptor budget the reader
still answers."""

from __future__ import annotations

import os
import time

import pytest
from conftest import require_root

from runqscale.probes.cgroupfs import CgroupMounts, CpuStatReader, read_cpu_stat
from runqscale.probes.model import Hierarchy
from runqscale.validation.sandbox import IDLE, Sandbox

pytestmark = pytest.mark.kernel
HIERARCHIES = [Hierarchy.V1_CPU, Hierarchy.V2]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _files_per_cgroup(sb: Sandbox, rel: str) -> int:
    """cpu.stat, and cpuacct.usage (v1 with a cpuacct hierarchy) or cpu.pressure (v2 with PSI)."""
    from runqscale.probes.cgroupfs import _cpu_files

    other = _cpu_files(sb.mounts, sb.hierarchy, rel)[1]
    return 1 + (other is not None and os.path.exists(other))


def _reader(sb: Sandbox, max_open: int, *rels: str) -> CpuStatReader:
    reader = CpuStatReader(sb.mounts, sb.hierarchy, max_open=max_open)
    for rel in rels:
        reader.track(rel)
    return reader


def _sandbox(hier: Hierarchy, name: str) -> Sandbox:
    require_root()
    mounts = CgroupMounts.read()
    if (mounts.v2 if hier is Hierarchy.V2 else mounts.v1_cpu) is None:
        pytest.skip(f"no {hier.value} hierarchy on this machine")
    return Sandbox(hier, name=name, mounts=mounts)


@pytest.mark.parametrize("hier", HIERARCHIES, ids=["v1", "v2"])
def test_files_kept_open_read_live_counters(hier: Hierarchy) -> None:
    with _sandbox(hier, "rqs-cpufiles") as sb:
        hog = sb.group("hog")
        sb.spawn(hog)
        reader = _reader(sb, 8, hog.rel)
        try:
            first = reader(hog.rel)
            time.sleep(0.5)
            again = reader(hog.rel)
            fresh = read_cpu_stat(sb.mounts, hier, hog.rel)
            assert first is not None and again is not None and fresh is not None
            assert first.usage_seconds is not None and again.usage_seconds is not None
            # the same descriptors, read again from offset 0, see the hog's new CPU time
            assert again.usage_seconds - first.usage_seconds > 0.2
            assert fresh.usage_seconds is not None
            assert 0 <= fresh.usage_seconds - again.usage_seconds < 0.2
            assert reader.open_count() == 1 and reader.opens == 1
            if _files_per_cgroup(sb, hog.rel) == 2 and hier is Hierarchy.V2:  # PSI is on
                assert again.pressure_some_seconds is not None
        finally:
            reader.close()


@pytest.mark.parametrize("hier", HIERARCHIES, ids=["v1", "v2"])
def test_a_removed_cgroup_reads_none_and_its_files_close(hier: Hierarchy) -> None:
    with _sandbox(hier, "rqs-cpufiles-rm") as sb:
        g = sb.group("gone")
        sb.spawn(g, code=IDLE)
        reader = _reader(sb, 8, g.rel)
        try:
            before = _fds()
            assert reader(g.rel) is not None
            assert _fds() == before + _files_per_cgroup(sb, g.rel)
            sb.remove(g)
            assert reader(g.rel) is None
            assert reader.open_count() == 0 and _fds() == before  # no kernel buffer kept
        finally:
            reader.close()


@pytest.mark.parametrize("hier", HIERARCHIES, ids=["v1", "v2"])
def test_a_name_made_again_is_read_from_the_new_cgroup(hier: Hierarchy) -> None:
    with _sandbox(hier, "rqs-cpufiles-again") as sb:
        g = sb.group("again")
        sb.spawn(g)
        reader = _reader(sb, 8, g.rel)
        try:
            time.sleep(0.4)
            old = reader(g.rel)
            assert old is not None and old.usage_seconds is not None
            assert old.usage_seconds > 0.2
            sb.remove(g)
            g = sb.group("again")  # same path, a new (idle) cgroup
            new = reader(g.rel)
            assert new is not None and new.usage_seconds is not None
            assert new.usage_seconds < 0.1  # not the removed hog's counters
            assert reader.open_count() == 1
        finally:
            reader.close()


def test_past_its_budget_the_reader_opens_and_closes_and_forget_closes() -> None:
    hier = Hierarchy.V1_CPU
    with _sandbox(hier, "rqs-cpufiles-cap") as sb:
        groups = [sb.group(f"g{i}", quota_cores=0.5) for i in range(4)]
        reader = _reader(sb, 2, *(g.rel for g in groups))
        per = _files_per_cgroup(sb, groups[0].rel)
        try:
            before = _fds()
            stats = [reader(g.rel) for g in groups]
            assert all(s is not None and s.nr_periods is not None for s in stats)
            assert reader.open_count() == 2 and _fds() == before + 2 * per
            again = [reader(g.rel) for g in groups]  # kept and not kept alike
            assert all(s is not None for s in again)
            reader.forget(groups[0].rel)
            assert reader.open_count() == 1 and _fds() == before + per
            assert reader(groups[3].rel) is not None  # the freed room is used again
            assert reader.open_count() == 2
        finally:
            reader.close()
        assert _fds() == before


def test_a_path_no_longer_tracked_keeps_nothing_open() -> None:
    """A scrape of an older snapshot can ask for a container the agent has just dropped: that
    read still answers, and leaves no file open that nothing would close."""
    with _sandbox(Hierarchy.V1_CPU, "rqs-cpufiles-untracked") as sb:
        g = sb.group("late", quota_cores=0.5)
        twice = sb.group("twice")
        reader = _reader(sb, 8, g.rel, twice.rel, twice.rel)  # two containers at one path
        try:
            assert reader(g.rel) is not None and reader(twice.rel) is not None
            before = _fds()
            reader.forget(g.rel)
            assert _fds() == before - _files_per_cgroup(sb, g.rel)
            late = reader(g.rel)
            assert late is not None and late.nr_periods is not None
            assert reader.open_count() == 1 and _fds() == before - _files_per_cgroup(sb, g.rel)
            reader.forget(twice.rel)  # one of the two is left: its files stay
            assert reader.open_count() == 1
            reader.forget(twice.rel)
            assert reader.open_count() == 0
        finally:
            reader.close()
