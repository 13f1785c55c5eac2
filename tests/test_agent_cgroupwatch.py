"""The agent's inotify-fed cgroup index on the real cgroupfs: a cgroup that lives between two
reads still resolves (if it lived long enough for the watcher to stat it: a cgroup removed
within microseconds of its creation is not seen), and whether an idle container's cgroup
exists is known without a stat() per container per interval, yet turns false as soon as the
directory is removed."""

from __future__ import annotations

import os
import time

import pytest
from agent_helpers import until
from conftest import require_root

from runqscale.agent.cgroupwatch import WatchedCgroupIndex
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.validation.sandbox import Sandbox

pytestmark = pytest.mark.kernel  # root and the real cgroupfs: a skip fails the run in CI




def test_short_lived_cgroups_resolve_and_removal_is_seen_without_stat(
        monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    hier, root = CgroupMounts.read().choose("auto")
    with Sandbox(hier, name="rq-watch") as sb:
        index = WatchedCgroupIndex(root, retain=10)
        try:
            live = sb.group("live")
            brief = sb.group("brief")
            brief_id = os.stat(brief.dirs[0]).st_ino
            time.sleep(0.2)  # a short job: it lives for a fraction of one 1 s interval
            sb.remove(brief)  # ... and is gone before any read of the probe
            assert until(lambda: index._learned.get(brief_id) is not None, 3.0)
            assert index.path_of(brief_id) == brief.rel
            assert until(lambda: live.rel in index._watched, 3.0)

            stats = []
            real_isdir = os.path.isdir
            monkeypatch.setattr(os.path, "isdir",
                                lambda p: stats.append(p) or real_isdir(p))
            assert all(index.exists(live.rel) for _ in range(100))
            assert stats == [], "a watched, live cgroup must not cost a stat()"
            sb.remove(live)
            assert until(lambda: not index.exists(live.rel), 3.0), "removal not seen in 3 s"
        finally:
            index.close()


def test_each_cgroup_path_is_held_once_by_the_walk_the_watch_and_later_walks() -> None:
    """Memory at 500 containers (issue 18): the walk, the inotify index and every re-walk keep
    the same string per cgroup, not a copy each (stop 44: 0.575 -> 0.425 MB for 1004 paths)."""
    require_root()
    hier, root = CgroupMounts.read().choose("auto")
    with Sandbox(hier, name="rq-watch-intern") as sb:
        early = sb.group("pod-early/ctr")
        index = WatchedCgroupIndex(root, retain=10)
        try:
            late = sb.group("pod-late/ctr")  # learned from IN_CREATE, not at start
            assert until(lambda: late.rel in index._watched, 3.0)
            index.walk()
            first = dict(index._by_id)
            index.walk()
            for g in (early, late):
                ino = os.stat(g.dirs[0]).st_ino
                walked = index._by_id[ino]
                assert walked == g.rel
                assert walked is first[ino], "a re-walk made a second copy"
                watched = next(r for r in index._watched if r == g.rel)
                assert watched is walked, "the watch and the walk hold two copies"
                assert index._learned[ino][0] is walked
        finally:
            index.close()
