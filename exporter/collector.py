"""The Prometheus collector: metric families rendered at scrape time from the agent's snapshot.

Nothing here runs between scrapes, and nothing reaches into the agent: a scrape takes the newest
immutable `AgentSnapshot` (agent/snapshot.py), turns the containers' cumulative rows into the
exported buckets and their windows into quantiles (one numpy call each for all containers), reads
each container's CPU accounting, and emits the agent's self-metrics. Names, types, help and
labels come from exporter/metrics.py. Every family is a `RowFamily` (exporter/families.py),
which renders the text format fast and still looks like a client_python Metric; each
container's escaped label string is cached here until its labels change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from runqscale.agent.attribution import Labels
from runqscale.agent.snapshot import AgentSnapshot
from runqscale.exporter import metrics as m
from runqscale.exporter.buckets import LE_STRINGS, cumulative_buckets_rows
from runqscale.exporter.families import RowFamily, label_string, single
from runqscale.probes.model import SLOTS, VALUE_WORDS, quantiles_rows

QUANTILES = (0.95, 0.99)


@dataclass(frozen=True)
class BuildInfo:
    version: str
    backend: str
    kernel: str
    hierarchy: str


class _Rendered:
    """A container's escaped label string, kept between scrapes until its labels change."""

    __slots__ = ("labels", "path", "values", "labelstr", "_by_holder")

    def __init__(self, node: str, labels: Labels, path: str) -> None:
        self.labels, self.path = labels, path
        self.values = (node, labels.namespace, labels.pod, labels.container, path)
        self.labelstr = label_string(m.CONTAINER_LABELS, self.values)
        self._by_holder: tuple[tuple[tuple[str, ...], str], ...] | None = None

    def by_holder(self) -> tuple[tuple[tuple[str, ...], str], ...]:
        """(label values, label string) per holder: built on first use, kept with the labels."""
        if self._by_holder is None:
            self._by_holder = tuple(((*self.values, h), f'{self.labelstr},holder="{h}"')
                                    for h in m.RUNQ_WAIT_HOLDERS)
        return self._by_holder


def _family(spec: m.Metric) -> RowFamily:
    return RowFamily(spec.name, spec.help, spec.type, spec.labels,
                     LE_STRINGS if spec.type == "histogram" else ())


class AgentCollector:
    def __init__(self, snapshot: Callable[[], AgentSnapshot], node: str, build: BuildInfo) -> None:
        self.snapshot, self.node, self.build = snapshot, node, build
        self.scrape_seconds = 0.0  # the previous scrape's duration (set by the HTTP server)
        # cgroup id -> what the previous scrape rendered for it (labels, and the window's
        # quantiles, computed again only when the labels or the window changed)
        self._rendered: dict[int, _Rendered] = {}
        self._lock = threading.Lock()

    def record_scrape(self, seconds: float) -> None:
        self.scrape_seconds = seconds

    def describe(self) -> list[RowFamily]:
        return []  # families depend on state; nothing to pre-declare (keeps registration cheap)

    def collect(self) -> Iterator[RowFamily]:
        snap = self.snapshot()
        hist, p95, p99, wait, usage, periods, thr_p, thr_s, psi, held = map(
            _family, m.CONTAINER_METRICS)
        with self._lock:
            old, new = self._rendered, {}
            for c in snap.containers:
                r = old.get(c.cgroup_id)
                if r is None or r.labels is not c.labels or r.path != c.path:
                    r = _Rendered(self.node, c.labels, c.path)
                new[c.cgroup_id] = r
            self._rendered = new  # containers gone from the snapshot leave the cache too
        # Vectorised over containers (agent/cumulative.py): every bucket row in one call, every
        # window quantile in another; per container only the text is Python's.
        rows = snap.rows()
        totals = snap.cumulative[rows]
        buckets = cumulative_buckets_rows(totals[:, :SLOTS])
        quantiles = quantiles_rows(snap.window(rows), QUANTILES).tolist()
        wait_seconds = (totals[:, SLOTS] / 1e9).tolist()
        held_seconds = (totals[:, SLOTS + 1:VALUE_WORDS] / 1e9).tolist()
        for i, c in enumerate(snap.containers):
            r = new[c.cgroup_id]
            lv, ls = r.values, r.labelstr
            wait_s = wait_seconds[i]
            hist.add(lv, ls, (buckets[i], wait_s))
            q95, q99 = quantiles[i]
            p95.add(lv, ls, 0.0 if q95 != q95 else q95)  # NaN: nothing waited in the window
            p99.add(lv, ls, 0.0 if q99 != q99 else q99)
            wait.add(lv, ls, wait_s)
            if c.held:  # else the backend cannot tell (bcc)
                for (hv, hs), s in zip(r.by_holder(), held_seconds[i], strict=True):
                    held.add(hv, hs, s)
            cpu = snap.cpu_of(c)
            if cpu is None:
                continue
            if cpu.usage_seconds is not None:
                usage.add(lv, ls, cpu.usage_seconds)
            if cpu.nr_periods is not None:
                periods.add(lv, ls, cpu.nr_periods)
            if cpu.nr_throttled is not None:
                thr_p.add(lv, ls, cpu.nr_throttled)
            if cpu.throttled_seconds is not None:
                thr_s.add(lv, ls, cpu.throttled_seconds)
            if cpu.pressure_some_seconds is not None:
                psi.add(lv, ls, cpu.pressure_some_seconds)
        yield from (hist, p95, p99, wait, usage, periods, thr_p, thr_s, psi, held)
        ps = snap.probe
        for spec, value in ((m.AGENT_EVENTS, ps.events),
                            (m.AGENT_BPF_RUN_SECONDS, ps.bpf_run_time_ns / 1e9),
                            (m.AGENT_BPF_RUNS, ps.bpf_run_count),
                            (m.AGENT_MAP_ENTRIES, ps.map_entries),
                            (m.AGENT_MAP_CAPACITY, ps.map_capacity),
                            (m.AGENT_MAP_FULL, ps.map_full),
                            (m.AGENT_ATTRIBUTION_MISSES, snap.attribution_misses),
                            (m.AGENT_UNKNOWN_PODS, snap.unknown_pods),
                            (m.AGENT_SAMPLE_ERRORS, snap.sample_errors),
                            (m.AGENT_SCRAPE_SECONDS, self.scrape_seconds),
                            (m.AGENT_CONTAINERS, len(snap.containers))):
            yield single(spec.name, spec.help, spec.type, value)
        spec = m.AGENT_BUILD_INFO
        info = RowFamily(spec.name, spec.help, spec.type, spec.labels)
        b = self.build
        values = (b.version, b.backend, b.kernel, b.hierarchy)
        info.add(values, label_string(spec.labels, values), 1.0)
        yield info
