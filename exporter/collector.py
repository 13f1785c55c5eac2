"""The Prometheus collector: metric families rendered at scrape time from the agent's snapshot.

Nothing here runs between scrapes, and nothing reaches into the agent: a scrape takes the newest
immutable `AgentSnapshot` (agent/snapshot.py), turns the containers' cumulative rows into the
exported buckets and their windows into quantiles (numpy calls per block of 64 containers),
reads each container's CPU accounting, and emits the agent's self-metrics. Names, types, help and
labels come from exporter/metrics.py. Every family is a `RowFamily` (exporter/families.py),
which renders the text format fast and still looks like a client_python Metric; each
container's escaped label string is cached here until its labels change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

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

    __slots__ = ("labels", "path", "values", "labelstr")

    def __init__(self, node: str, labels: Labels, path: str) -> None:
        self.labels, self.path = labels, path
        self.values = (node, labels.namespace, labels.pod, labels.container, path)
        self.labelstr = label_string(m.CONTAINER_LABELS, self.values)


def _family(spec: m.Metric) -> RowFamily:
    return RowFamily(spec.name, spec.help, spec.type, spec.labels,
                     LE_STRINGS if spec.type == "histogram" else ())


# Containers per block of the scrape's matrix work: every step's temporaries are a block's
# (64 x 133 words, ~70 KB), not all containers' at once (at 500, ~2.6 MB of matrices that the
# heap then kept between scrapes).
BLOCK = 64


def _derived(snap: AgentSnapshot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per container, in `containers` order: cumulative bucket counts (one column per
    LE_STRINGS entry), the window's quantiles (QUANTILES; NaN where nothing waited), and wait
    seconds: the total, then the split by holder (HOLDERS)."""
    rows = snap.rows()
    n = len(rows)
    buckets = np.empty((n, len(LE_STRINGS)), dtype=np.uint64)
    quantiles = np.empty((n, len(QUANTILES)))
    seconds = np.empty((n, VALUE_WORDS - SLOTS))
    for lo in range(0, n, BLOCK):
        part = rows[lo:lo + BLOCK]
        totals = snap.cumulative[part]
        buckets[lo:lo + BLOCK] = cumulative_buckets_rows(totals[:, :SLOTS])
        quantiles[lo:lo + BLOCK] = quantiles_rows(snap.window(part), QUANTILES)
        seconds[lo:lo + BLOCK] = totals[:, SLOTS:] / 1e9
    return buckets, quantiles, seconds


class AgentCollector:
    def __init__(self, snapshot: Callable[[], AgentSnapshot], node: str, build: BuildInfo,
                 http_refusals: Callable[[], dict[str, int]]) -> None:
        # http_refusals: the endpoint's refusals by reason (MetricsServer.refusals)
        self.snapshot, self.node, self.build = snapshot, node, build
        self.http_refusals = http_refusals
        self.scrape_seconds = 0.0  # the previous scrape's duration (set by the HTTP server)
        # cgroup id -> its escaped labels as the previous scrape rendered them (made again only
        # when the labels or the cgroup path change)
        self._rendered: dict[int, _Rendered] = {}
        self._lock = threading.Lock()

    def record_scrape(self, seconds: float) -> None:
        self.scrape_seconds = seconds

    def describe(self) -> list[RowFamily]:
        return []  # families depend on state; nothing to pre-declare (keeps registration cheap)

    def collect(self) -> Iterator[RowFamily]:
        snap = self.snapshot()
        with self._lock:
            old, new = self._rendered, {}
            for c in snap.containers:
                r = old.get(c.cgroup_id)
                if r is None or r.labels is not c.labels or r.path != c.path:
                    r = _Rendered(self.node, c.labels, c.path)
                new[c.cgroup_id] = r
            self._rendered = new  # containers gone from the snapshot leave the cache too
        rendered = [new[c.cgroup_id] for c in snap.containers]
        # Everything that reads or computes runs here, before the first family is yielded (a
        # failure fails the scrape before its status line).
        buckets, quantiles, seconds = _derived(snap)
        cpus = [snap.cpu_of(c) for c in snap.containers]
        # Then one family at a time, each built only once the one before it has been rendered
        # (iter_chunks lets go of a family before it asks for the next): a scrape holds one
        # family's rows, not all ten (at 500 containers the rows of all of them were ~1.4 MB of
        # small objects, and the pymalloc arenas they filled stayed with the agent).
        hist, p95, p99, wait, usage, periods, thr_p, thr_s, psi, held = m.CONTAINER_METRICS
        fam = _family(hist)
        wait_seconds = seconds[:, 0].tolist()
        # each row's counts stay a view into `buckets`: turned into ints as the row is rendered
        for r, cum, wait_s in zip(rendered, buckets, wait_seconds, strict=True):
            fam.add(r.values, r.labelstr, (cum, wait_s))
        yield fam
        for spec, at in ((p95, 0), (p99, 1)):
            fam = _family(spec)
            for r, q in zip(rendered, quantiles[:, at].tolist(), strict=True):
                fam.add(r.values, r.labelstr, 0.0 if q != q else q)  # NaN: nothing waited
            yield fam
        fam = _family(wait)
        for r, wait_s in zip(rendered, wait_seconds, strict=True):
            fam.add(r.values, r.labelstr, wait_s)
        yield fam
        del wait_seconds
        for spec, field in ((usage, "usage_seconds"), (periods, "nr_periods"),
                            (thr_p, "nr_throttled"), (thr_s, "throttled_seconds"),
                            (psi, "pressure_some_seconds")):
            fam = _family(spec)
            for r, cpu in zip(rendered, cpus, strict=True):
                if cpu is not None and (v := getattr(cpu, field)) is not None:
                    fam.add(r.values, r.labelstr, v)
            yield fam
        fam = _family(held)
        for r, c, split in zip(rendered, snap.containers, seconds[:, 1:].tolist(), strict=True):
            if c.held:  # else the backend cannot tell (bcc)
                for h, s in zip(m.RUNQ_WAIT_HOLDERS, split, strict=True):
                    # built per scrape, not kept: 4 strings of ~250 bytes per container
                    fam.add((*r.values, h), f'{r.labelstr},holder="{h}"', s)
        yield fam
        del fam
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
        spec = m.AGENT_HTTP_REFUSED
        refused = RowFamily(spec.name, spec.help, spec.type, spec.labels)
        for reason, n in self.http_refusals().items():
            refused.add((reason,), label_string(spec.labels, (reason,)), float(n))
        yield refused
