"""Every PromQL query the scaler sends, in one place.

Series are grouped per workload: `namespace` plus a `workload` label derived from `pod` (a
Deployment's pod `name-<replicaset hash>-<suffix>` belongs to `name`; other pods are their own
workload). Run-queue p95 per workload comes from the aggregated histogram when it exists
(histograms aggregate across pods; p95 gauges do not) and otherwise from the worst pod's p95
gauge. Replica counts come from kube-state-metrics when it is scraped, else from the number of
pods reporting. runqscale's own metric names come from their declaration (exporter/metrics.py);
the others are kube-state-metrics' and the workload's `http_requests_total`.
"""

from __future__ import annotations

from dataclasses import dataclass

from runqscale.exporter import metrics as m
from runqscale.scaler.model import HOLDER_FIELDS

RATE = "1m"


_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"


def by_workload(expr: str) -> str:
    """Add the `workload` label, the same chain as deploy/prometheus/runqscale-rules.yaml.

    container (outside Kubernetes: the cgroup path) < pod < pod minus a StatefulSet ordinal or a
    5-char generated suffix < pod minus a Deployment's pod-template-hash and suffix (last wins).
    """
    return (
        f"label_replace(label_replace(label_replace(label_replace({expr}, "
        f'"workload", "$1", "container", "(.*)"), '
        f'"workload", "$1", "pod", "(.+)"), '
        f'"workload", "$1", "pod", "(.+)-(?:[0-9]+|{_SAFE}{{5}})"), '
        f'"workload", "$1", "pod", "(.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}")'
    )


def _from_deployment(expr: str) -> str:
    return f'label_replace({expr}, "workload", "$1", "deployment", "(.+)")'


GROUP = "namespace, workload"
# Replicas without kube-state-metrics: count pods, not containers (a pod's pause/conmon cgroup
# and each of its containers are separate series).
_P95_OF_PODS = m.RUNQ_P95.series + '{pod!=""}'
_REQUESTS = 'sum by (namespace, pod) (kube_pod_container_resource_requests{resource="cpu"})'
_LIMITS = 'sum by (namespace, pod) (kube_pod_container_resource_limits{resource="cpu"})'


@dataclass(frozen=True)
class Queries:
    """Signal field -> PromQL (each answering one value per namespace/workload)."""

    runq_p95_seconds: str
    cpu_usage_cores: str
    throttled_ratio: str
    pressure: str
    request_rate: str
    runq_wait_seconds_per_second: str
    throttled_seconds_per_second: str
    # the run-queue wait split by what held the CPU meanwhile (model.HOLDER_FIELDS)
    runq_wait_same_cgroup_seconds_per_second: str
    runq_wait_other_cgroup_seconds_per_second: str
    runq_wait_kernel_seconds_per_second: str
    runq_wait_idle_seconds_per_second: str
    replicas: str
    ready_replicas: str
    cpu_request_cores: str
    cpu_limit_cores: str

    def items(self) -> list[tuple[str, str]]:
        return [(k, getattr(self, k)) for k in self.__dataclass_fields__]


def queries(rate_window: str = RATE) -> Queries:
    """The queries with counters' rates over `rate_window` (PromQL duration, e.g. '1m', '30s').

    Use at least four scrape intervals; a series younger than the window reads low (rate divides
    the increase it saw by the whole window).
    """

    def rate(metric: str) -> str:
        return f"rate({metric}[{rate_window}])"

    def held(holder: str) -> str:
        series = f'{m.RUNQ_WAIT_BY_HOLDER.series}{{holder="{holder}"}}'
        return f"sum by ({GROUP}) ({by_workload(rate(series))})"

    return Queries(
        runq_p95_seconds=(
            f"histogram_quantile(0.95, sum by ({GROUP}, le) ("
            f"{by_workload(rate(m.RUNQ_LATENCY.series))}))"
            f" or max by ({GROUP}) ({by_workload(m.RUNQ_P95.series)})"
        ),
        cpu_usage_cores=(
            f"sum by ({GROUP}) ({by_workload(rate(m.CPU_USAGE.series))})"
        ),
        throttled_ratio=(
            f"sum by ({GROUP}) ("
            f"{by_workload(rate(m.CPU_THROTTLED_PERIODS.series))})"
            f" / sum by ({GROUP}) ({by_workload(rate(m.CPU_PERIODS.series))})"
        ),
        pressure=(
            f"avg by ({GROUP}) ({by_workload(rate(m.CPU_PRESSURE_SOME.series))})"
        ),
        request_rate=f"sum by ({GROUP}) ({by_workload(rate('http_requests_total'))})",
        runq_wait_seconds_per_second=(
            f"sum by ({GROUP}) ({by_workload(rate('runqscale_runqueue_wait_seconds_total'))})"
        ),
        throttled_seconds_per_second=(
            f"sum by ({GROUP}) ({by_workload(rate('runqscale_cpu_throttled_seconds_total'))})"
        ),
        **{field: held(holder) for holder, field in HOLDER_FIELDS.items()},
        replicas=(
            f"max by ({GROUP}) ({_from_deployment('kube_deployment_spec_replicas')})"
            f" or count by ({GROUP}) (group by ({GROUP}, pod) ({by_workload(_P95_OF_PODS)}))"
        ),
        ready_replicas=(
            f"max by ({GROUP}) ({_from_deployment('kube_deployment_status_replicas_ready')})"
            f" or count by ({GROUP}) (group by ({GROUP}, pod) ({by_workload(_P95_OF_PODS)}))"
        ),
        cpu_request_cores=f"max by ({GROUP}) ({by_workload(_REQUESTS)})",
        cpu_limit_cores=f"max by ({GROUP}) ({by_workload(_LIMITS)})",
    )


DEFAULT = queries()


def pods(rate_window: str = RATE) -> dict[str, str]:
    """Per-pod instant queries (one value per namespace/workload/pod/node): what SHOWAR's
    node-pressure spread needs (where each pod runs, how long it waits, how much CPU it uses)."""
    by = "namespace, workload, pod, node"
    usage = f'rate(runqscale_cpu_usage_seconds_total{{pod!=""}}[{rate_window}])'
    return {
        "runq_p95_seconds": f"max by ({by}) ({by_workload(_P95_OF_PODS)})",
        "cpu_usage_cores": f"sum by ({by}) ({by_workload(usage)})",
    }


def signal_age() -> str:
    """Seconds since each workload's newest run-queue sample was scraped (an instant query).
    A range query repeats a gauge's last value for Prometheus's 5-minute lookback, and after a
    Prometheus restart it answers with pre-outage values until the next scrape: this tells them
    apart. `timestamp()` goes inside `label_replace`, where it still sees the raw samples."""
    newest = (
        f"{by_workload(f'timestamp({m.RUNQ_P95.series})')} or "
        f"{by_workload(f'timestamp({m.RUNQ_LATENCY.count})')}"
    )
    return f"time() - max by ({GROUP}) ({newest})"
