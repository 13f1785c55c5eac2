"""The scaler's own metrics (`runqscale_scaler_*`), served on its `/metrics`.

What an operator needs to trust the scaler: how many decisions of each action each policy made,
what it wants against what runs (replicas, CPU limit and request per replica), errors by kind,
how long a step takes, and whether this replica leads. The Grafana dashboard's scaler panels read
these names (deploy/grafana/runqscale-dashboard.json).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from runqscale.scaler.actuators.base import ApplyResult
from runqscale.scaler.model import ACTIONS, Recommendation

_WL = ("namespace", "workload")


class ScalerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "runqscale_scaler_decisions", "Decisions made, by workload, policy and action.",
            (*_WL, "policy", "action"), registry=r)
        self.recommended_replicas = Gauge(
            "runqscale_scaler_recommended_replicas", "Replicas the last decision asked for.",
            _WL, registry=r)
        self.current_replicas = Gauge(
            "runqscale_scaler_current_replicas", "Replicas when the last decision was made.",
            _WL, registry=r)
        self.recommended_limit = Gauge(
            "runqscale_scaler_recommended_cpu_limit_cores",
            "CPU limit per replica the last decision asked for (cores; absent: no limit).",
            _WL, registry=r)
        self.current_limit = Gauge(
            "runqscale_scaler_current_cpu_limit_cores",
            "CPU limit per replica when the last decision was made (cores).", _WL, registry=r)
        self.recommended_request = Gauge(
            "runqscale_scaler_recommended_cpu_request_cores",
            "CPU request per replica the last decision asked for (cores).", _WL, registry=r)
        self.current_request = Gauge(
            "runqscale_scaler_current_cpu_request_cores",
            "CPU request per replica when the last decision was made (cores).", _WL, registry=r)
        self.errors = Counter(
            "runqscale_scaler_errors", "Errors by kind: apply, signals, api, log.", ("kind",),
            registry=r)
        self.step_duration = Histogram(
            "runqscale_scaler_step_duration_seconds", "Time of one decision step.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.leader = Gauge(
            "runqscale_scaler_leader", "1 while this replica holds the leader Lease.",
            registry=r)
        for kind in ("apply", "signals", "api", "log"):
            self.errors.labels(kind)  # present at 0 from the start: rate() works at once

    def decided(self, rec: Recommendation, result: ApplyResult | None) -> None:
        wl = (rec.workload.namespace, rec.workload.name)
        if rec.action in ACTIONS:
            self.decisions.labels(*wl, rec.policy, rec.action).inc()
        if rec.action == "affinity":
            return
        c, r = rec.current, rec.recommended
        self.recommended_replicas.labels(*wl).set(r.replicas)
        self.current_replicas.labels(*wl).set(c.replicas)
        for gauge, value in ((self.recommended_limit, r.cpu_limit_cores),
                             (self.current_limit, c.cpu_limit_cores),
                             (self.recommended_request, r.cpu_request_cores),
                             (self.current_request, c.cpu_request_cores)):
            if value is None:
                try:
                    gauge.remove(*wl)
                except KeyError:
                    pass
            else:
                gauge.labels(*wl).set(value)
        if result is not None and result.error is not None:
            self.errors.labels("apply").inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def serve(self, port: int, addr: str = "") -> None:
        """Serve /metrics on a background thread (prometheus_client's own server)."""
        start_http_server(port, addr=addr, registry=self.registry)
