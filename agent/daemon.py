"""The node agent's state and loop: sample every interval, keep a window per container.

`Agent.step()` takes one `Sampler` interval, folds it into the per-container state, and
publishes an immutable `AgentSnapshot` (agent/snapshot.py) of it: the exporter renders only
that. A failed sample is counted and logged, and the loop (and the HTTP server) carries on.
Containers whose cgroup vanished keep their series for one window, then are dropped.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from runqscale.agent.attribution import Attributor, Labels
from runqscale.agent.pods import PodSource
from runqscale.agent.sampler import Sampler
from runqscale.agent.snapshot import EMPTY, AgentSnapshot, ContainerSnapshot
from runqscale.agent.window import SlidingWindow
from runqscale.probes.cgroupfs import CpuStat, read_cpu_stat
from runqscale.probes.model import CgroupHistogram, ProbeStats


@dataclass
class Container:
    cgroup_id: int
    path: str
    labels: Labels
    window: SlidingWindow
    total: CgroupHistogram  # cumulative since the agent (and its probe) started
    cpu: CpuStat | None = None
    last_seen: float = 0.0  # time of the last sample that listed this cgroup


@dataclass
class AgentStats:
    samples: int = 0
    sample_errors: int = 0
    attribution_misses: int = 0  # waits whose cgroup id did not resolve to a path
    probe: ProbeStats = field(default_factory=ProbeStats)
    last_sample_at: float | None = None  # monotonic
    last_sample_seconds: float = 0.0  # how long the last step took


class Agent:
    def __init__(self, sampler: Sampler, pods: PodSource, interval: float, window: float,
                 clock: Callable[[], float] = time.monotonic,
                 attributor: Attributor | None = None) -> None:
        self.sampler, self.pods = sampler, pods
        # With a sampler that skips cpu.stat, the snapshot reads it at scrape time.
        self._cpu_reader: Callable[[str], CpuStat | None] | None = None
        if not getattr(sampler, "read_cpu", True):
            self._cpu_reader = functools.partial(read_cpu_stat, sampler.mounts,
                                                 sampler.probe.hierarchy)
        self.interval, self.window = interval, window
        self.clock = clock
        self.attr = attributor or Attributor(pods)
        self.lock = threading.Lock()
        self.containers: dict[int, Container] = {}
        self.stats = AgentStats()
        self._snapshot = EMPTY
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one interval ---------------------------------------------------------------------------

    def step(self) -> bool:
        """Sample once and fold it in. False (and counted, and logged) if the sample failed."""
        t0 = self.clock()
        try:
            self.pods.poll()
            iv = self.sampler.sample()
        except Exception as e:  # noqa: BLE001 - one bad interval must not stop the agent
            with self.lock:
                self.stats.sample_errors += 1
                self._snapshot = replace(self._snapshot, sample_errors=self.stats.sample_errors)
            print(f"runqscale agent: sample failed: {type(e).__name__}: {e}", file=sys.stderr,
                  flush=True)
            return False
        now = iv.reading.monotonic_s
        with self.lock:
            seen = set()
            for s in iv.cgroups:
                seen.add(s.cgroup_id)
                c = self.containers.get(s.cgroup_id)
                labels = self.attr.labels(s.cgroup_id, s.path, now)
                if c is None:
                    c = Container(s.cgroup_id, s.path, labels, SlidingWindow(self.window), s.total)
                    self.containers[s.cgroup_id] = c
                c.labels, c.total, c.cpu, c.last_seen = labels, s.total, s.cpu, now
                c.window.add(now, s.total.slots, s.total.count)
            for cid in [k for k in self.containers if k not in seen]:
                c = self.containers[cid]
                c.window.expire(now)
                if now - c.last_seen >= self.window:
                    del self.containers[cid]
                    self.attr.forget(cid)
            st = self.stats
            st.samples += 1
            st.attribution_misses += iv.unresolved_events
            st.probe = iv.reading.stats
            st.last_sample_at = now
            self._publish(now)
            st.last_sample_seconds = self.clock() - t0
        return True

    def _publish(self, now: float) -> None:
        """Swap in the snapshot of this interval (one reference: readers never see a mix)."""
        st = self.stats
        self._snapshot = AgentSnapshot(
            now, tuple(ContainerSnapshot(c.cgroup_id, c.path, c.labels, c.total, c.window.newest,
                                         c.window.start, c.cpu)
                       for c in self.containers.values()),
            st.probe, st.samples, st.sample_errors, st.attribution_misses,
            self.attr.unknown_pods, self._cpu_reader)

    def snapshot(self) -> AgentSnapshot:
        """The newest interval, immutable: what the exporter renders."""
        return self._snapshot

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Sample every interval, on a fixed schedule (no drift), until stop()."""
        nxt = self.clock() + self.interval
        while not self._stop.wait(max(0.0, nxt - self.clock())):
            self.step()
            nxt += self.interval
            late = self.clock() - nxt
            if late > 0:  # overran: skip the missed ticks rather than bursting
                nxt += (late // self.interval + 1) * self.interval

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def healthy(self) -> bool:
        last = self.stats.last_sample_at
        return last is not None and self.clock() - last <= 3 * self.interval + 1.0
