"""The scaler's own metrics (`runqscale_scaler_*`), served on its `/metrics`.

What an operator needs to trust the scaler: how many decisions of each action each policy made,
what it wants against what runs (replicas, CPU limit and request per replica), errors by kind,
how long a step takes, and whether this replica leads. Names, help and labels are declared once
in runqscale.exporter.metrics (the dashboard's scaler panels and their test read the same).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from runqscale.exporter import metrics as m
from runqscale.scaler.actuators.base import ApplyResult
from runqscale.scaler.model import ACTIONS, Recommendation

ERROR_KINDS = ("apply", "signals", "api", "log", "policy")


def _gauge(decl: m.Metric, registry: CollectorRegistry) -> Gauge:
    return Gauge(decl.name, decl.help, decl.labels, registry=registry)


class ScalerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.decisions = Counter(m.SCALER_DECISIONS.name, m.SCALER_DECISIONS.help,
                                 m.SCALER_DECISIONS.labels, registry=r)
        self.recommended_replicas = _gauge(m.SCALER_RECOMMENDED_REPLICAS, r)
        self.current_replicas = _gauge(m.SCALER_CURRENT_REPLICAS, r)
        self.recommended_limit = _gauge(m.SCALER_RECOMMENDED_CPU, r)
        self.current_limit = _gauge(m.SCALER_CURRENT_CPU, r)
        self.recommended_request = _gauge(m.SCALER_RECOMMENDED_REQUEST, r)
        self.current_request = _gauge(m.SCALER_CURRENT_REQUEST, r)
        self.errors = Counter(m.SCALER_ERRORS.name, m.SCALER_ERRORS.help, m.SCALER_ERRORS.labels,
                              registry=r)
        self.step_duration = Histogram(
            m.SCALER_STEP_SECONDS.name, m.SCALER_STEP_SECONDS.help,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.leader = Gauge(m.SCALER_LEADER.name, m.SCALER_LEADER.help, registry=r)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)  # present at 0 from the start: rate() works at once
        self._seen: set[tuple[str, str, str]] = set()

    def decided(self, rec: Recommendation, result: ApplyResult | None) -> None:
        wl = (rec.workload.namespace, rec.workload.name)
        if (*wl, rec.policy) not in self._seen:
            # every action's series at 0 from a workload's first decision: increase() cannot
            # see a counter's first sample, so a series born at 1 hides the first scale-in
            # (say) an hour later from the dashboard's decisions panel and annotations
            self._seen.add((*wl, rec.policy))
            for action in ACTIONS:
                self.decisions.labels(*wl, rec.policy, action)
        if rec.action in ACTIONS:
            self.decisions.labels(*wl, rec.policy, rec.action).inc()
        if result is not None and result.error is not None:
            self.errors.labels("apply").inc()
        if rec.action == "affinity":
            return
        c, r = rec.current, rec.recommended
        self.recommended_replicas.labels(*wl).set(r.replicas)
        self.current_replicas.labels(*wl).set(c.replicas)
        for gauge, value in ((self.recommended_limit, r.cpu_limit_cores),
                             (self.current_limit, c.cpu_limit_cores),
                             (self.recommended_request, r.cpu_request_cores),
                             (self.current_request, c.cpu_request_cores)):
            if value is None:  # no limit: no series (absent, not 0)
                try:
                    gauge.remove(*wl)
                except KeyError:
                    pass
            else:
                gauge.labels(*wl).set(value)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def serve(self, port: int, addr: str = "") -> None:
        """Serve /metrics on a background thread (prometheus_client's own server)."""
        start_http_server(port, addr=addr, registry=self.registry)
