"""The sampler's per-cgroup decisions, the same for the CLI's `sample()` and the agent's
`sample_rows()`: an id that does not resolve counts its waits as unresolved and is dropped after
two misses, a cgroup outside `--cgroup` is skipped, an idle cgroup that no longer exists is
dropped from the map, and a cgroup that waited is taken to exist without asking the filesystem.
Pure logic: a scripted probe and index stand in for the kernel map and the cgroup tree (the same
rules on the real kernel: tests/test_probe_kernel.py, tests/test_agent_daemon.py)."""

from __future__ import annotations

import numpy as np
import pytest

from runqscale.agent.sampler import Sampler
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.model import (
    SLOTS,
    VALUE_WORDS,
    CgroupHistogram,
    Hierarchy,
    ProbeReading,
)


class ScriptedIndex:
    """path_of / exists from dicts the test edits; counts the existence checks."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths: dict[int, str] = {}
        self.alive: set[str] = set()
        self.exists_calls: list[str] = []
        self.forgotten: list[int] = []

    def walk(self) -> None:
        pass

    def path_of(self, cid: int) -> str | None:
        return self.paths.get(cid)

    def abspath(self, rel: str) -> str:
        return self.root + rel

    def exists(self, rel: str) -> bool:
        self.exists_calls.append(rel)
        return rel in self.alive

    def forget(self, cid: int) -> None:
        self.forgotten.append(cid)


class ScriptedProbe:
    """A map whose per-id wait counts the test sets before each read."""

    hierarchy = Hierarchy.V2

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.forgotten: list[int] = []
        self.t = 0.0

    def read(self) -> ProbeReading:
        self.t += 1.0
        hists = {}
        for cid, n in self.counts.items():
            row = np.zeros(VALUE_WORDS, dtype=np.uint64)
            row[3] = n  # n waits in one slot
            row[SLOTS] = n * 1000
            hists[cid] = CgroupHistogram.from_row(cid, row)
        return ProbeReading(self.t, self.hierarchy, hists)

    def forget(self, ids: list[int]) -> None:
        self.forgotten += ids
        for cid in ids:
            self.counts.pop(cid, None)


def _sampler(tmp_path, only: list[str] | None = None) -> tuple[Sampler, ScriptedProbe,
                                                               ScriptedIndex]:
    probe, index = ScriptedProbe(), ScriptedIndex(str(tmp_path))
    s = Sampler(probe, CgroupMounts(None, None, None), str(tmp_path), only=only, read_cpu=False,
                index=index)  # type: ignore[arg-type]
    return s, probe, index


def _kept(s: Sampler, rows: bool) -> tuple[list[str], int, int]:
    if rows:
        iv = s.sample_rows()
        return sorted(iv.paths), iv.unresolved_events, iv.removed
    iv2 = s.sample()
    return sorted(c.path for c in iv2.cgroups), iv2.unresolved_events, iv2.removed


@pytest.mark.parametrize("rows", [False, True], ids=["sample", "sample_rows"])
def test_both_reads_decide_each_cgroup_alike(tmp_path, rows: bool) -> None:
    s, probe, index = _sampler(tmp_path, only=["/kubepods"])
    index.paths = {1: "/kubepods/a", 2: "/kubepods/b", 3: "/system.slice/x"}
    index.alive = {"/kubepods/a", "/kubepods/b", "/system.slice/x"}
    probe.counts = {1: 5, 2: 7, 3: 9, 4: 11}  # 4: created after the last walk, not resolved
    assert _kept(s, rows) == (["/kubepods/a", "/kubepods/b"], 11, 0)

    # a waits, b idles and is still there, the unknown id waits 2 more and misses a 2nd walk
    probe.counts.update({1: 8, 4: 13})
    index.exists_calls.clear()
    assert _kept(s, rows) == (["/kubepods/a", "/kubepods/b"], 2, 1)
    assert 4 in probe.forgotten and 4 in index.forgotten
    # a cgroup that waited is taken to exist; the idle one is asked once; /system.slice never
    assert index.exists_calls == ["/kubepods/b"]

    # b is removed while idle: dropped from the map and the index, a stays
    index.alive.discard("/kubepods/b")
    probe.counts[1] = 9
    assert _kept(s, rows) == (["/kubepods/a"], 0, 1)
    assert 2 in probe.forgotten and 2 in index.forgotten
    assert 1 not in probe.forgotten


def test_an_unresolved_id_that_resolves_on_the_next_walk_is_kept_not_dropped(tmp_path) -> None:
    s, probe, index = _sampler(tmp_path)
    probe.counts = {7: 3}
    assert _kept(s, True) == ([], 3, 0)  # one miss may be a race with the walk
    index.paths[7] = "/pod/c"
    index.alive.add("/pod/c")
    probe.counts[7] = 4
    assert _kept(s, True) == (["/pod/c"], 0, 0)
    assert probe.forgotten == []
