"""Helpers for real-kernel probe tests: open a backend, and compare it with the kernel's oracle."""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass

import pytest
from conftest import require_root

from runqscale.probes.backends import open_probe
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.errors import ProbeError
from runqscale.probes.model import Hierarchy, ProbeReading
from runqscale.validation.sandbox import Group, Sandbox, thread_run_delay_ns


def open_backend(backend: str, hier: Hierarchy, **kw: object):
    require_root()
    if backend == "bcc" and importlib.util.find_spec("runqscale.probes.bcc") is None:
        pytest.skip("bcc backend not built")
    mounts = CgroupMounts.read()
    if hier is Hierarchy.V1_CPU and not mounts.v1_cpu:
        pytest.skip("no v1 cpu hierarchy on this machine")
    try:
        probe, _, _ = open_probe(backend, hier.value, mounts=mounts, **kw)  # type: ignore[arg-type]
    except ProbeError as e:
        pytest.fail(f"{backend} probe failed to load: {e}")
    return probe


def quota_hierarchy() -> Hierarchy:
    """Where CPU quotas apply, as `--hierarchy auto` picks it: the v1 cpu hierarchy on hybrid
    nodes (this machine), else cgroup2 with the cpu controller (pure v2 nodes, tests/vm)."""
    mounts = CgroupMounts.read()
    hier, root = mounts.choose("auto")
    if hier is Hierarchy.V2 and not v2_has_cpu(root):
        pytest.skip(f"no cpu controller: neither a v1 cpu hierarchy nor cpu in {root}")
    return hier


def light_neighbour_bound(hog_p95: float) -> float:
    """The p95 a light neighbour of a quota hog must stay under: 1 ms on a real machine. In the
    test VM one emulator thread runs both vCPUs in turn (tests/vm_helpers.py), so a wakeup onto
    the idle vCPU waits for that vCPU's turn (1.29-1.35 ms at p95 in CI runs): there the
    neighbour is held to an order of magnitude under the hog instead."""
    emulated = os.environ.get("RUNQSCALE_VM_ACCEL", "").startswith("tcg")
    return hog_p95 / 10 if emulated else 0.001


def v2_has_cpu(root: str) -> bool:
    try:
        with open(os.path.join(root, "cgroup.subtree_control")) as f:
            return "cpu" in f.read().split()
    except OSError:
        return False


@dataclass
class Comparison:
    name: str
    bpf_wait_ns: int
    kernel_wait_ns: int
    events: int


def measure(probe, sb: Sandbox, groups: list[Group], seconds: float) -> tuple[
        list[Comparison], ProbeReading, ProbeReading]:
    """Histogram-sum delta per cgroup vs summed schedstat run_delay of its threads.

    Each end is a bracketed snapshot (schedstat, probe, schedstat, averaged) taken at real-time
    priority, so a loaded machine cannot starve the test between the two reads it compares.
    """
    ids = {g.name: _ino(g) for g in groups}
    k0, r0 = _snapshot(probe, groups)
    time.sleep(seconds)
    k1, r1 = _snapshot(probe, groups)
    out = []
    for g in groups:
        h1, h0 = r1.histograms.get(ids[g.name]), r0.histograms.get(ids[g.name])
        d = h1.minus(h0) if h1 else None
        kernel = sum(v - k0[g.name].get(t, 0) for t, v in k1[g.name].items())
        out.append(Comparison(g.name, d.sum_ns if d else 0, int(kernel), d.count if d else 0))
    return out, r0, r1


def _snapshot(probe, groups: list[Group]) -> tuple[dict[str, dict[int, float]], ProbeReading]:
    old = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except PermissionError:
        pass
    try:
        before = {g.name: thread_run_delay_ns(g.pids) for g in groups}
        reading = probe.read()
        after = {g.name: thread_run_delay_ns(g.pids) for g in groups}
    finally:
        os.sched_setscheduler(0, old[0], old[1])
    mid = {name: {t: (v + after[name].get(t, v)) / 2 for t, v in per.items()}
           for name, per in before.items()}
    return mid, reading


def _ino(g: Group) -> int:
    return os.stat(g.dirs[0]).st_ino
