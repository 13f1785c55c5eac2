"""The node agent's state and loop: sample every interval, keep a window per container.

`Agent.step()` takes one `Sampler` interval as a matrix (`Sampler.sample_rows`), gives each
container a row of the cumulative matrices (agent/cumulative.py), and publishes an immutable
`AgentSnapshot` (agent/snapshot.py) of it: the exporter renders only that. A failed sample is
counted and logged, and the loop (and the HTTP server) carries on. Containers whose cgroup
vanished keep their series for one window, then are dropped.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from runqscale.agent.attribution import Attributor, Labels
from runqscale.agent.cumulative import CumulativeTable
from runqscale.agent.pods import PodSource
from runqscale.agent.sampler import Sampler
from runqscale.agent.snapshot import EMPTY, AgentSnapshot, ContainerRow
from runqscale.probes.cgroupfs import CpuStatReader
from runqscale.probes.model import ProbeStats


@dataclass
class Container:
    cgroup_id: int
    path: str
    labels: Labels
    row: int  # in the cumulative matrices (agent/cumulative.py)
    held: bool  # whether the backend splits its wait by holder
    settled: bool = False  # its labels are final (agent/attribution.py): no lookup per interval
    last_seen: float = 0.0  # time of the last sample that listed this cgroup


@dataclass
class AgentStats:
    samples: int = 0
    sample_errors: int = 0
    attribution_misses: int = 0  # waits whose cgroup id did not resolve to a path
    probe: ProbeStats = field(default_factory=ProbeStats)
    last_sample_at: float | None = None  # monotonic
    last_sample_seconds: float = 0.0  # how long the last step took


def _open_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Agent:
    def __init__(self, sampler: Sampler, pods: PodSource, interval: float, window: float,
                 clock: Callable[[], float] = time.monotonic,
                 attributor: Attributor | None = None) -> None:
        self.sampler, self.pods = sampler, pods
        # cpu.stat is read at scrape time (agent/snapshot.py), never per interval, from files
        # kept open: two descriptors per container, at most half the descriptors the agent may
        # have, so connections and everything else always find one
        self._cpu_reader = CpuStatReader(sampler.mounts, sampler.probe.hierarchy,
                                         max_open=_open_file_limit() // 4)
        self.interval, self.window = interval, window
        self.clock = clock
        self.attr = attributor or Attributor(pods)
        self.lock = threading.Lock()
        self.containers: dict[int, Container] = {}
        self.table = CumulativeTable(window)
        self._rows: tuple[ContainerRow, ...] = ()
        self._last_ids: list[int] | None = None  # the sampler's list of the last interval
        self._last_rows: list[int] = []
        self._all_settled = False
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
            iv = self.sampler.sample_rows()
        except Exception as e:  # noqa: BLE001 - one bad interval must not stop the agent
            with self.lock:
                self.stats.sample_errors += 1
                self._snapshot = replace(self._snapshot, sample_errors=self.stats.sample_errors)
            print(f"runqscale agent: sample failed: {type(e).__name__}: {e}", file=sys.stderr,
                  flush=True)
            return False
        now = iv.monotonic_s
        with self.lock:
            table, containers, labels_of = self.table, self.containers, self.attr.labels
            changed = False
            rows: list[int] = []
            # The sampler's steady state (the very list of cgroups of the last interval, all of
            # them tracked) with every label final: only the counters changed.
            steady = iv.ids is self._last_ids and len(containers) == len(iv.ids) \
                and self._all_settled
            if steady:
                for c in containers.values():
                    c.last_seen = now
                rows = self._last_rows
            for cid, path, held in () if steady else zip(iv.ids, iv.paths, iv.held, strict=True):
                c = containers.get(cid)
                if c is None:
                    c = containers[cid] = Container(cid, path, labels_of(cid, path, now),
                                                    table.allocate(), held)
                    c.settled, changed = self.attr.settled(cid), True
                    self._cpu_reader.track(path)
                elif not c.settled or c.path is not path and c.path != path:
                    labels = labels_of(cid, path, now)
                    if c.path != path:  # moved (v1 allows renaming a cgroup)
                        self._cpu_reader.forget(c.path)
                        self._cpu_reader.track(path)
                    if c.labels is not labels or c.path != path:
                        c.labels, c.path, changed = labels, path, True
                    c.settled = self.attr.settled(cid)
                c.last_seen = now
                rows.append(c.row)
            released = []
            if len(containers) != len(rows):  # some were not listed: drop those gone a window
                for cid in [k for k, c in containers.items() if now - c.last_seen >= self.window]:
                    gone = containers.pop(cid)
                    released.append(gone.row)
                    table.release(gone.row, now)
                    self._cpu_reader.forget(gone.path)
                    self.attr.forget(cid)
                    changed = True
            table.update(now, rows, iv.rows, released)
            if not steady:
                self._last_ids, self._last_rows = iv.ids, rows
                self._all_settled = all(c.settled for c in containers.values())
            if changed:
                self._rows = tuple(ContainerRow(c.cgroup_id, c.path, c.labels, c.row, c.held)
                                   for c in containers.values())
            st = self.stats
            st.samples += 1
            st.attribution_misses += iv.unresolved_events
            st.probe = iv.stats
            st.last_sample_at = now
            self._publish(now)
            st.last_sample_seconds = self.clock() - t0
        return True

    def _publish(self, now: float) -> None:
        """Swap in the snapshot of this interval (one reference: readers never see a mix)."""
        st = self.stats
        self._snapshot = AgentSnapshot(
            now, self._rows, st.probe, st.samples, st.sample_errors, st.attribution_misses,
            self.attr.unknown_pods, self._cpu_reader, self.table.current, self.table.start)

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
