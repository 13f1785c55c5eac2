"""Agent state and collector without a kernel: a fake probe behind the real Sampler, exposition
parsed back, window expiry, removal after one window, failed samples; CLI usage errors."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from agent_helpers import RUNQSCALE
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from runqscale.agent.daemon import Agent
from runqscale.agent.pods import PodSource
from runqscale.agent.sampler import Sampler
from runqscale.exporter.buckets import LE_STRINGS
from runqscale.exporter.collector import AgentCollector, BuildInfo
from runqscale.exporter.families import render
from runqscale.exporter.server import REFUSALS
from runqscale.probes.cgroupfs import CgroupMounts
from runqscale.probes.model import (
    HOLDERS,
    SLOTS,
    CgroupHistogram,
    Hierarchy,
    ProbeReading,
    ProbeStats,
    slot_of,
)


class FakeProbe:
    backend, hierarchy = "fake", Hierarchy.V2

    def __init__(self) -> None:
        self.t = 0.0
        self.hists: dict[int, CgroupHistogram] = {}
        self.fail_next = False

    def add(self, cid: int, waits_ns: list[int], holder: str | None = "same_cgroup") -> None:
        """Waits of cgroup `cid`, all behind `holder` (None: a backend that cannot tell)."""
        h = self.hists.get(cid) or CgroupHistogram(cid, np.zeros(SLOTS, np.uint64), 0, 0)
        slots = h.slots.copy()
        for w in waits_ns:
            slots[slot_of(w)] += 1
        held = None
        if holder is not None:
            held = np.zeros(len(HOLDERS), np.uint64) if h.held_ns is None else h.held_ns.copy()
            held[HOLDERS.index(holder)] += sum(waits_ns)
        self.hists[cid] = CgroupHistogram(cid, slots, h.sum_ns + sum(waits_ns),
                                          h.count + len(waits_ns), held)

    def read(self) -> ProbeReading:
        if self.fail_next:
            self.fail_next = False
            raise OSError("map read failed")
        self.t += 1.0
        return ProbeReading(self.t, self.hierarchy, dict(self.hists),
                            ProbeStats(events=sum(h.count for h in self.hists.values()),
                                       map_entries=len(self.hists), map_capacity=64))

    def forget(self, ids: list[int]) -> None:
        for i in ids:
            self.hists.pop(i, None)

    def close(self) -> None:
        pass


def _setup(tmp_path):
    root = tmp_path / "cg"
    (root / "a").mkdir(parents=True)
    (root / "a" / "cpu.stat").write_text(
        "usage_usec 2000000\nnr_periods 100\nnr_throttled 40\nthrottled_usec 500000\n")
    (root / "a" / "cpu.pressure").write_text(
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=250000\n")
    probe = FakeProbe()
    mounts = CgroupMounts(str(root), None, None)
    sampler = Sampler(probe, mounts, str(root))
    agent = Agent(sampler, PodSource(), interval=1.0, window=3.0, clock=lambda: probe.t)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(AgentCollector(agent.snapshot, "n1", BuildInfo("0", "fake", "k", "v2"),
                                lambda: dict.fromkeys(REFUSALS, 0)))
    return root, probe, agent, reg


def _scrape(reg) -> dict:
    from prometheus_client.exposition import generate_latest

    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_families_labels_buckets_and_window(tmp_path) -> None:
    root, probe, agent, reg = _setup(tmp_path)
    cid = os.stat(root / "a").st_ino
    probe.add(cid, [20_000] * 90 + [40_000_000] * 10)
    assert agent.step()
    s = _scrape(reg)
    labels = {"node": "n1", "namespace": "", "pod": "", "container": "/a", "cgroup": "/a"}
    buckets = [x for x in s["runqscale_runqueue_latency_seconds_bucket"] if x.labels["cgroup"]
               == "/a"]
    assert [b.labels["le"] for b in buckets] == [str(float(le)) if le != "+Inf" else "+Inf"
                                                   for le in LE_STRINGS]
    assert buckets[-1].value == 100
    p95 = s["runqscale_runqueue_latency_p95_seconds"][0]
    assert p95.labels == labels and 30e-3 < p95.value < 50e-3
    assert s["runqscale_cpu_usage_seconds_total"][0].value == 2.0
    assert s["runqscale_cpu_throttled_periods_total"][0].value == 40
    assert s["runqscale_cpu_throttled_seconds_total"][0].value == 0.5
    assert s["runqscale_cpu_pressure_some_seconds_total"][0].value == 0.25
    assert s["runqscale_agent_containers"][0].value == 1
    # quiet for a window: the gauge falls to 0, the cumulative histogram stays
    for _ in range(3):
        agent.step()
    s = _scrape(reg)
    assert s["runqscale_runqueue_latency_p95_seconds"][0].value == 0
    assert s["runqscale_runqueue_latency_seconds_count"][0].value == 100


def test_wait_by_holder_series_split_the_wait_and_render_fast(tmp_path) -> None:
    """Four counters per container, one per holder, adding up to the wait; the fast renderer
    (what /metrics serves) and client_python's samples say the same."""
    root, probe, agent, reg = _setup(tmp_path)
    (root / "b").mkdir()
    agent.sampler.index.walk()  # b is newer than the sampler's first walk
    a, b = os.stat(root / "a").st_ino, os.stat(root / "b").st_ino
    probe.add(a, [3_000_000] * 10, "other_cgroup")
    probe.add(a, [1_000_000] * 5, "same_cgroup")
    probe.add(a, [500_000] * 2, "idle")
    probe.add(b, [7_000] * 3, None)  # its backend cannot split (bcc): no holder series
    assert agent.step()
    served = {}
    for fam in text_string_to_metric_families(render(reg.collect()).decode()):
        for smp in fam.samples:
            served.setdefault(smp.name, []).append(smp)
    assert _scrape(reg)["runqscale_runqueue_wait_by_holder_seconds_total"] == \
        served["runqscale_runqueue_wait_by_holder_seconds_total"]
    held = {smp.labels["holder"]: smp.value
            for smp in served["runqscale_runqueue_wait_by_holder_seconds_total"]
            if smp.labels["cgroup"] == "/a"}
    assert held == {"same_cgroup": 0.005, "other_cgroup": 0.03, "kernel": 0.0, "idle": 0.001}
    wait = {smp.labels["cgroup"]: smp.value
            for smp in served["runqscale_runqueue_wait_seconds_total"]}
    assert sum(held.values()) == pytest.approx(wait["/a"])
    assert wait["/b"] == pytest.approx(21e-6)
    assert all(smp.labels["cgroup"] == "/a"
               for smp in served["runqscale_runqueue_wait_by_holder_seconds_total"])
    # counters: the next interval's waits add to the same series
    probe.add(a, [2_000_000] * 4, "other_cgroup")
    assert agent.step()
    later = {smp.labels["holder"]: smp.value for smp in
             _scrape(reg)["runqscale_runqueue_wait_by_holder_seconds_total"]}
    assert later["other_cgroup"] == pytest.approx(0.038) and later["same_cgroup"] == 0.005


def test_removed_cgroup_kept_one_window_then_dropped(tmp_path) -> None:
    root, probe, agent, reg = _setup(tmp_path)
    cid = os.stat(root / "a").st_ino
    probe.add(cid, [1000])
    agent.step()
    for f in (root / "a").iterdir():
        f.unlink()
    (root / "a").rmdir()
    probe.add(cid, [2000])  # its last waits, read after it vanished
    agent.step()
    s = _scrape(reg)
    assert s["runqscale_runqueue_latency_seconds_count"][0].value == 2
    agent.step()
    agent.step()
    assert len(agent.containers) == 1
    agent.step()  # one window (3 s) after it was last seen
    assert agent.containers == {}
    assert "runqscale_runqueue_latency_seconds_count" not in _scrape(reg)


def test_the_steady_state_shortcut_still_sees_waits_newcomers_and_removals(tmp_path) -> None:
    """Once an interval lists the same cgroups as the last, the sampler and the agent skip all
    per-cgroup work (agent/sampler.py _unchanged): new waits must still show, a new cgroup must
    end the shortcut and be tracked, and an idle cgroup removed in it must still be noticed."""
    root, probe, agent, reg = _setup(tmp_path)
    (root / "b").mkdir()
    agent.sampler.index.walk()
    a, b = os.stat(root / "a").st_ino, os.stat(root / "b").st_ino
    probe.add(a, [10_000])
    probe.add(b, [10_000])
    agent.step()
    agent.step()  # the same cgroups again: from here on the shortcut holds
    ids = agent.sampler.sample_rows().ids
    assert agent.sampler.sample_rows().ids is ids, "the steady state is not taken"

    def counts() -> dict[str, float]:
        return {x.labels["cgroup"]: x.value
                for x in _scrape(reg)["runqscale_runqueue_latency_seconds_count"]}

    probe.add(a, [20_000_000] * 50)
    assert agent.step()
    assert counts() == {"/a": 51, "/b": 1}
    p95 = {x.labels["cgroup"]: x.value
           for x in _scrape(reg)["runqscale_runqueue_latency_p95_seconds"]}
    assert p95["/a"] > 10e-3
    (root / "c").mkdir()
    agent.sampler.index.walk()
    probe.add(os.stat(root / "c").st_ino, [5_000] * 3)
    assert agent.step()
    assert counts() == {"/a": 51, "/b": 1, "/c": 3}
    agent.step()
    (root / "b").rmdir()  # idle: only the existence check can tell
    for _ in range(4):  # one window (3 s) and the interval that notices
        agent.step()
    assert set(counts()) == {"/a", "/c"}


def test_failed_sample_is_counted_and_the_agent_carries_on(tmp_path) -> None:
    root, probe, agent, reg = _setup(tmp_path)
    probe.fail_next = True
    assert not agent.step()
    assert agent.step()
    s = _scrape(reg)
    assert s["runqscale_agent_sample_errors_total"][0].value == 1


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RUNQSCALE, "agent", *args], capture_output=True, text=True, timeout=30)


def test_config_file_bad_key_names_it_and_the_fix(tmp_path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("listen: ':9100'\nintervall: 2s\n")
    r = _run("--config", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "intervall" in lines[0] and "did you mean 'interval'" in lines[0]


def test_config_file_values_are_validated_like_flags(tmp_path) -> None:
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({"window": "soon"}))
    r = _run("--config", str(cfg))
    assert r.returncode == 2 and "--window" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_usage_errors_exit_2_with_one_line() -> None:
    for args, needle in ((["--listen", "nope"], "--listen"),
                         (["--interval", "5s", "--window", "1s"], "--window"),
                         (["--pods-source", "kubelet"], "--kubelet-url")):
        r = _run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
