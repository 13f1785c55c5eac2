"""The Prometheus collector: metric families built at scrape time from the agent's latest state.

Nothing here runs between scrapes; a scrape takes the agent's lock, turns each container's
cumulative probe histogram into the exported buckets, reads its window's quantiles (cached until
the window changes), then (outside the lock) reads each container's CPU accounting, and emits the
agent's self-metrics. Per-container families are `RowFamily`s (exporter/families.py): ordinary
client_python Metrics that also render the text format fast. Names: exporter/METRICS.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runqscale.agent.daemon import QUANTILES, Agent
from runqscale.exporter.buckets import LE_STRINGS, cumulative_buckets
from runqscale.exporter.families import RowFamily, label_string
from runqscale.probes.cgroupfs import read_cpu_stat

LABELS = ["node", "namespace", "pod", "container", "cgroup"]


@dataclass(frozen=True)
class BuildInfo:
    version: str
    backend: str
    kernel: str
    hierarchy: str


class AgentCollector(Collector):
    def __init__(self, agent: Agent, node: str, build: BuildInfo) -> None:
        self.agent, self.node, self.build = agent, node, build

    def describe(self) -> list[Metric]:
        return []  # families depend on state; nothing to pre-declare (keeps registration cheap)

    def collect(self) -> Iterator[Metric]:
        def fam(name: str, doc: str, typ: str) -> RowFamily:
            return RowFamily(name, doc, typ, LABELS, LE_STRINGS if typ == "histogram" else ())

        hist = fam("runqscale_runqueue_latency_seconds",
                   "Run-queue latency of the container's threads: time from becoming runnable to "
                   "running, cumulative since the agent started.", "histogram")
        p95 = fam("runqscale_runqueue_latency_p95_seconds",
                  "95th percentile run-queue latency over the last window (0 if nothing waited).",
                  "gauge")
        p99 = fam("runqscale_runqueue_latency_p99_seconds",
                  "99th percentile run-queue latency over the last window (0 if nothing waited).",
                  "gauge")
        wait = fam("runqscale_runqueue_wait_seconds",
                   "Summed run-queue wait of the container's threads.", "counter")
        usage = fam("runqscale_cpu_usage_seconds", "CPU time used.", "counter")
        periods = fam("runqscale_cpu_periods", "CFS enforcement periods elapsed.", "counter")
        thr_p = fam("runqscale_cpu_throttled_periods",
                    "CFS periods in which the cgroup hit its CPU quota.", "counter")
        thr_s = fam("runqscale_cpu_throttled_seconds",
                    "Time the cgroup's threads were throttled by its CPU quota.", "counter")
        psi = fam("runqscale_cpu_pressure_some_seconds",
                  "cpu.pressure 'some' total: time at least one thread waited for a CPU "
                  "(cgroup v2 only).", "counter")
        a = self.agent
        rows = []
        with a.lock:
            for c in a.containers.values():
                key = (self.node, c.labels, c.path)
                if c.render_key != key:
                    c.render_values = (self.node, c.labels.namespace, c.labels.pod,
                                       c.labels.container, c.path)
                    c.render_labels = label_string(LABELS, c.render_values)
                    c.render_key = key
                lv, ls = c.render_values, c.render_labels
                wait_s = c.total.sum_ns / 1e9
                hist.add(lv, ls, (cumulative_buckets(c.total.slots).tolist(), wait_s))
                q95, q99 = c.window.quantiles(QUANTILES)
                p95.add(lv, ls, q95 or 0.0)
                p99.add(lv, ls, q99 or 0.0)
                wait.add(lv, ls, wait_s)
                rows.append((lv, ls, c.path, c.cpu))
            n = len(a.containers)
            st = a.stats
            ps = st.probe
            misses, unknown = st.attribution_misses, a.attr.unknown_pods
            errors, scrape_s = st.sample_errors, st.scrape_seconds
        # CPU accounting is read now, outside the lock: cumulative counters are exact at scrape
        # time, and the sampling loop never pays for them (see Agent.read_cpu).
        for lv, ls, path, cpu in rows:
            if a.read_cpu_at_scrape:
                cpu = read_cpu_stat(a.sampler.mounts, a.sampler.probe.hierarchy, path)
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
        yield from (hist, p95, p99, wait, usage, periods, thr_p, thr_s, psi)
        yield _counter("runqscale_agent_events", "Run-queue waits measured by the probe.",
                       ps.events)
        yield _counter("runqscale_agent_bpf_run_seconds",
                       "Time spent in the probe's BPF programs (kernel bpf_stats).",
                       ps.bpf_run_time_ns / 1e9)
        yield _counter("runqscale_agent_bpf_runs", "Runs of the probe's BPF programs.",
                       ps.bpf_run_count)
        yield _gauge("runqscale_agent_map_entries", "Cgroups in the probe's histogram map.",
                     ps.map_entries)
        yield _gauge("runqscale_agent_map_capacity", "Capacity of the probe's histogram map.",
                     ps.map_capacity)
        yield _counter("runqscale_agent_map_full",
                       "Waits dropped because the probe's histogram map was full.", ps.map_full)
        yield _counter("runqscale_agent_attribution_misses",
                       "Waits whose cgroup id did not resolve to a cgroup path.", misses)
        yield _counter("runqscale_agent_unknown_pods",
                       "Cgroups laid out like a pod's whose pod uid the pod list does not know.",
                       unknown)
        yield _counter("runqscale_agent_sample_errors",
                       "Sampling intervals that failed (logged; the agent carried on).", errors)
        yield _gauge("runqscale_agent_scrape_duration_seconds",
                     "Duration of the previous scrape of this endpoint (build and encode).",
                     scrape_s)
        yield _gauge("runqscale_agent_containers", "Containers (cgroups) with exported series.", n)
        info = GaugeMetricFamily("runqscale_agent_build_info",
                                 "Agent build and runtime: version, probe backend, kernel, "
                                 "cgroup hierarchy measured.",
                                 labels=["version", "backend", "kernel", "hierarchy"])
        b = self.build
        info.add_metric([b.version, b.backend, b.kernel, b.hierarchy], 1)
        yield info


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
