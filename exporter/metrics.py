"""Every runqscale metric, declared once: name, type, help and labels.

The agent's collector builds its families from these declarations, the scaler's PromQL takes its
names from them, and the tests check that every `runqscale_*` name in the Prometheus rules and
the Grafana dashboard is declared here (as ebpf_exporter keeps each probe's metrics in one
declaration). Names and labels are a contract: exporter/METRICS.md documents them for users.

`name` is the family name as client_python takes it: a counter's samples add `_total`, a
histogram's add `_bucket`, `_count` and `_sum` (see `Metric.samples`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from runqscale.probes.model import HOLDERS

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()

    @property
    def series(self) -> str:
        """The sample name PromQL reads (a histogram's: its `_bucket` series)."""
        return {"counter": self.name + "_total", "gauge": self.name,
                "histogram": self.name + "_bucket"}[self.type]

    @property
    def count(self) -> str:
        assert self.type == "histogram", self.name
        return self.name + "_count"

    @property
    def samples(self) -> tuple[str, ...]:
        """Every sample name this family exposes."""
        if self.type == "histogram":
            return tuple(self.name + s for s in ("_bucket", "_count", "_sum"))
        return (self.series,)


# -- the agent: per-container series (exporter/collector.py) ----------------------------------

CONTAINER_LABELS = ("node", "namespace", "pod", "container", "cgroup")


def _c(name: str, typ: MetricType, help_: str) -> Metric:
    return Metric(name, typ, help_, CONTAINER_LABELS)


RUNQ_LATENCY = _c("runqscale_runqueue_latency_seconds", "histogram",
                  "Run-queue latency of the container's threads: time from becoming runnable to "
                  "running, cumulative since the agent started.")
RUNQ_P95 = _c("runqscale_runqueue_latency_p95_seconds", "gauge",
              "95th percentile run-queue latency over the last window (0 if nothing waited).")
RUNQ_P99 = _c("runqscale_runqueue_latency_p99_seconds", "gauge",
              "99th percentile run-queue latency over the last window (0 if nothing waited).")
RUNQ_WAIT = _c("runqscale_runqueue_wait_seconds", "counter",
               "Summed run-queue wait of the container's threads.")
# The wait above split by what held the CPU longest while each wait lasted (probes/model.py
# HOLDERS, the kernel's enum rq_holder order): one series per container and holder.
RUNQ_WAIT_HOLDERS: tuple[str, ...] = HOLDERS
RUNQ_WAIT_BY_HOLDER = Metric("runqscale_runqueue_wait_by_holder_seconds", "counter",
                             "Summed run-queue wait of the container's threads, split by what held "
                             "the CPU meanwhile: same_cgroup, other_cgroup, kernel or idle.",
                             (*CONTAINER_LABELS, "holder"))
CPU_USAGE = _c("runqscale_cpu_usage_seconds", "counter", "CPU time used.")
CPU_PERIODS = _c("runqscale_cpu_periods", "counter", "CFS enforcement periods elapsed.")
CPU_THROTTLED_PERIODS = _c("runqscale_cpu_throttled_periods", "counter",
                           "CFS periods in which the cgroup hit its CPU quota.")
CPU_THROTTLED_SECONDS = _c("runqscale_cpu_throttled_seconds", "counter",
                           "Time the cgroup's threads were throttled by its CPU quota.")
CPU_PRESSURE_SOME = _c("runqscale_cpu_pressure_some_seconds", "counter",
                       "cpu.pressure 'some' total: time at least one thread waited for a CPU "
                       "(cgroup v2 only).")
CONTAINER_METRICS = (RUNQ_LATENCY, RUNQ_P95, RUNQ_P99, RUNQ_WAIT, CPU_USAGE, CPU_PERIODS,
                     CPU_THROTTLED_PERIODS, CPU_THROTTLED_SECONDS, CPU_PRESSURE_SOME,
                     RUNQ_WAIT_BY_HOLDER)

# -- the agent: self-metrics (no per-container labels) ----------------------------------------

AGENT_EVENTS = Metric("runqscale_agent_events", "counter",
                      "Run-queue waits measured by the probe.")
AGENT_BPF_RUN_SECONDS = Metric("runqscale_agent_bpf_run_seconds", "counter",
                               "Time spent in the probe's BPF programs (kernel bpf_stats).")
AGENT_BPF_RUNS = Metric("runqscale_agent_bpf_runs", "counter", "Runs of the probe's BPF programs.")
AGENT_MAP_ENTRIES = Metric("runqscale_agent_map_entries", "gauge",
                           "Cgroups in the probe's histogram map.")
AGENT_MAP_CAPACITY = Metric("runqscale_agent_map_capacity", "gauge",
                            "Capacity of the probe's histogram map.")
AGENT_MAP_FULL = Metric("runqscale_agent_map_full", "counter",
                        "Waits dropped because the probe's histogram map was full.")
AGENT_ATTRIBUTION_MISSES = Metric("runqscale_agent_attribution_misses", "counter",
                                  "Waits whose cgroup id did not resolve to a cgroup path.")
AGENT_UNKNOWN_PODS = Metric("runqscale_agent_unknown_pods", "counter",
                            "Cgroups laid out like a pod's whose pod uid the pod list does not "
                            "know.")
AGENT_SAMPLE_ERRORS = Metric("runqscale_agent_sample_errors", "counter",
                             "Sampling intervals that failed (logged; the agent carried on).")
AGENT_SCRAPE_SECONDS = Metric("runqscale_agent_scrape_duration_seconds", "gauge",
                              "Duration of the previous scrape of this endpoint (build and "
                              "encode).")
AGENT_CONTAINERS = Metric("runqscale_agent_containers", "gauge",
                          "Containers (cgroups) with exported series.")
AGENT_BUILD_INFO = Metric("runqscale_agent_build_info", "gauge",
                          "Agent build and runtime: version, probe backend, kernel, cgroup "
                          "hierarchy measured.", ("version", "backend", "kernel", "hierarchy"))
AGENT_HTTP_REFUSED = Metric("runqscale_agent_http_refused", "counter",
                            "Connections and requests this endpoint turned away, by reason: "
                            "connection_limit, scrape_limit (503), deadline (shut down), "
                            "unauthorized (401).", ("reason",))
AGENT_METRICS = (AGENT_EVENTS, AGENT_BPF_RUN_SECONDS, AGENT_BPF_RUNS, AGENT_MAP_ENTRIES,
                 AGENT_MAP_CAPACITY, AGENT_MAP_FULL, AGENT_ATTRIBUTION_MISSES, AGENT_UNKNOWN_PODS,
                 AGENT_SAMPLE_ERRORS, AGENT_SCRAPE_SECONDS, AGENT_CONTAINERS, AGENT_BUILD_INFO,
                 AGENT_HTTP_REFUSED)

# -- the scaler's own /metrics (`runqscale scaler k8s`) ----------------------------------------
# The dashboard's scaler panels (deploy/grafana) read decisions_total by namespace, workload,
# policy and action, and recommended_replicas / recommended_cpu_limit_cores per workload.

WORKLOAD_LABELS = ("namespace", "workload")
SCALER_DECISIONS = Metric("runqscale_scaler_decisions", "counter",
                          "Policy decisions, by workload, policy and action (none included).",
                          (*WORKLOAD_LABELS, "policy", "action"))
SCALER_RECOMMENDED_REPLICAS = Metric("runqscale_scaler_recommended_replicas", "gauge",
                                     "Replicas the policy last recommended.", WORKLOAD_LABELS)
SCALER_CURRENT_REPLICAS = Metric("runqscale_scaler_current_replicas", "gauge",
                                 "Replicas the workload had at the last decision.",
                                 WORKLOAD_LABELS)
SCALER_RECOMMENDED_CPU = Metric("runqscale_scaler_recommended_cpu_limit_cores", "gauge",
                                "CPU limit per replica (cores) the policy last recommended.",
                                WORKLOAD_LABELS)
SCALER_CURRENT_CPU = Metric("runqscale_scaler_current_cpu_limit_cores", "gauge",
                            "CPU limit per replica (cores) at the last decision.",
                            WORKLOAD_LABELS)
SCALER_RECOMMENDED_REQUEST = Metric("runqscale_scaler_recommended_cpu_request_cores", "gauge",
                                    "CPU request per replica (cores) the policy last "
                                    "recommended.", WORKLOAD_LABELS)
SCALER_CURRENT_REQUEST = Metric("runqscale_scaler_current_cpu_request_cores", "gauge",
                                "CPU request per replica (cores) at the last decision.",
                                WORKLOAD_LABELS)
SCALER_ERRORS = Metric("runqscale_scaler_errors", "counter",
                       "Errors by kind (apply, signals, api, log).", ("kind",))
SCALER_STEP_SECONDS = Metric("runqscale_scaler_step_duration_seconds", "histogram",
                             "Duration of one scaler step over every workload.")
SCALER_LEADER = Metric("runqscale_scaler_leader", "gauge",
                       "1 while this replica holds the leader lease, else 0.")
SCALER_METRICS = (SCALER_DECISIONS, SCALER_RECOMMENDED_REPLICAS, SCALER_CURRENT_REPLICAS,
                  SCALER_RECOMMENDED_CPU, SCALER_CURRENT_CPU, SCALER_RECOMMENDED_REQUEST,
                  SCALER_CURRENT_REQUEST, SCALER_ERRORS, SCALER_STEP_SECONDS, SCALER_LEADER)

ALL = CONTAINER_METRICS + AGENT_METRICS + SCALER_METRICS


def sample_names() -> set[str]:
    """Every sample name a runqscale component exposes."""
    return {s for m in ALL for s in m.samples}


# A runqscale sample name in PromQL, YAML or JSON; not part of a recording rule's name
# (`workload:runqscale_...:p95_30s`), which is the rule's own, not a metric's.
_NAME = re.compile(r"(?<![\w:])runqscale_[a-z0-9_]+(?![\w:])")


def undeclared(text: str) -> set[str]:
    """The runqscale sample names `text` uses that no declaration exposes."""
    return set(_NAME.findall(text)) - sample_names()
