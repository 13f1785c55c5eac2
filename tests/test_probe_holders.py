"""Who held the CPU: each cgroup's run-queue wait split by what ran on the CPU just before the
waiting task was switched in (same cgroup, another cgroup, a kernel thread, idle). A container
crowded by a neighbour and one crowded by its own threads must get opposite attributions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from probe_helpers import open_backend

from runqscale.agent.sampler import Sampler
from runqscale.probes import core
from runqscale.probes.model import HOLDERS, CgroupHistogram, Hierarchy
from runqscale.validation.sandbox import Sandbox

pytestmark = pytest.mark.kernel
HEAVY_SHARES = 16384  # 16x the default weight, among the sandbox's own cgroups
SANDBOX_SHARES = 262144  # the maximum: the sandbox wins its CPUs over the shared machine's other
# load, so the split reflects the load under test, not other users' tasks


def _shares(path: str, value: int) -> None:
    with open(os.path.join(path, "cpu.shares"), "w") as f:
        f.write(str(value))


def _split(h: CgroupHistogram) -> dict[str, float]:
    assert h.held_ns is not None
    total = float(h.held_ns.sum())
    return {k: float(v) / total for k, v in zip(HOLDERS, h.held_ns, strict=True)} if total \
        else {}


@pytest.mark.parametrize("path", ["sched_info", "stamped"])
def test_neighbour_and_own_threads_give_opposite_attributions(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "stamped":  # the fallback programs, for kernels without CONFIG_SCHED_INFO
        monkeypatch.setattr(core, "SCHED_INFO", "/nonexistent/schedstat")
    probe = open_backend("core", Hierarchy.V1_CPU)
    assert probe.sched_info is (path == "sched_info")
    cpus = sorted(os.sched_getaffinity(0))
    try:
        with Sandbox(Hierarchy.V1_CPU, name="rq-holders") as sb:
            # CPU a: one task of "victim" beside a heavy neighbour hog of another cgroup.
            _shares(sb.root + sb.base, SANDBOX_SHARES)
            victim, neighbour = sb.group("victim"), sb.group("neighbour")
            _shares(neighbour.dirs[0], HEAVY_SHARES)
            # CPU b: "crowded" runs three hogs on its one CPU (threads > CPUs), heavy too.
            crowded = sb.group("crowded")
            _shares(crowded.dirs[0], HEAVY_SHARES)
            pinned = [(sb.spawn(victim), cpus[0]), (sb.spawn(neighbour), cpus[0])]
            pinned += [(sb.spawn(crowded), cpus[-1]) for _ in range(3)]
            for p, cpu in pinned:
                os.sched_setaffinity(p.pid, {cpu})
            sampler = Sampler(probe, sb.mounts, sb.root, only=[sb.base])
            time.sleep(0.5)
            sampler.sample()
            time.sleep(3.0)
            by = {s.path: s.delta for s in sampler.sample().cgroups}
            v, c = by[victim.rel], by[crowded.rel]
    finally:
        probe.close()
    sv, sc = _split(v), _split(c)
    report = f"victim {sv} ({v.sum_ns / 1e6:.0f} ms), crowded {sc} ({c.sum_ns / 1e6:.0f} ms)"
    print(report)
    assert v.sum_ns > 100e6 and c.sum_ns > 100e6, f"no contention: {report}"
    # Every wait is attributed to exactly one holder.
    for h in (v, c):
        assert h.held_ns is not None and int(h.held_ns.sum()) == h.sum_ns, report
    assert sv["other_cgroup"] > 0.6 and sv["other_cgroup"] > 3 * sv["same_cgroup"], report
    assert sc["same_cgroup"] > 0.6 and sc["same_cgroup"] > 3 * sc["other_cgroup"], report


def test_probe_json_carries_the_split_per_container() -> None:
    open_backend("core", Hierarchy.V1_CPU).close()  # checks root and BPF
    with Sandbox(Hierarchy.V1_CPU, name="rq-holders-json") as sb:
        _shares(sb.root + sb.base, SANDBOX_SHARES)
        g = sb.group("crowded")
        for _ in range(2):
            os.sched_setaffinity(sb.spawn(g).pid, {max(os.sched_getaffinity(0))})
        res = subprocess.run([sys.executable, "-m", "runqscale.agent.cli", "probe", "--json",
                              "--backend", "core", "--count", "2", "--interval", "0.5s",
                              "--cgroup", g.rel], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.splitlines()[-1])["containers"][0]
    split = row["wait_seconds_by_holder"]
    assert set(split) == set(HOLDERS)
    assert np.isclose(sum(split.values()), row["wait_seconds"], rtol=1e-6, atol=1e-9)
    assert split["same_cgroup"] > split["other_cgroup"], split
