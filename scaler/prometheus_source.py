"""Signals from Prometheus: the HTTP API's range queries (urllib, no extra dependency); the
queries are in runqscale.scaler.promql. Each answer is validated: NaN, ±Inf, values beyond a
field's sane range (signals.LIMITS) and points older than `staleness_seconds` before `now` become
missing (None) fields with a warning; an unreachable server or a non-success answer is a
PrometheusError with the URL and the reason."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from runqscale.scaler import promql
from runqscale.scaler.httpconfig import HttpClientConfig, HttpConfigError
from runqscale.scaler.model import PodSample, Sample, WorkloadRef
from runqscale.scaler.signals import LIMITS, RATIO_SLACK


class PrometheusError(RuntimeError):
    pass


@dataclass
class Fetched:
    samples: list[Sample]
    warnings: list[str] = field(default_factory=list)


class PrometheusSource:
    """Signals from a Prometheus server's HTTP API (range queries over the decision window)."""

    def __init__(
        self,
        url: str,
        queries: promql.Queries = promql.DEFAULT,
        timeout_seconds: float = 10.0,
        staleness_seconds: float = 120.0,
        pod_queries: Mapping[str, str] | None = None,
        http: HttpClientConfig | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.queries = queries
        self.timeout = timeout_seconds
        self.staleness = staleness_seconds
        self.pod_queries = dict(promql.pods()) if pod_queries is None else dict(pod_queries)
        self.http = http or HttpClientConfig()
        self._tls = self.http.ssl_context()  # once: a bad CA or key fails here, not per query

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        full = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            req = urllib.request.Request(full, headers=self.http.headers())
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._tls) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise PrometheusError(f"{self.url}: HTTP {exc.code} for {path}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"{self.url}: cannot reach Prometheus ({reason})") from None
        except HttpConfigError as exc:  # a secret file gone or emptied since start
            raise PrometheusError(f"{self.url}: {exc}") from None
        try:
            obj = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{self.url}: answer to {path} is not JSON") from None
        if not isinstance(obj, dict) or obj.get("status") != "success":
            err = obj.get("error") if isinstance(obj, dict) else None
            raise PrometheusError(f"{self.url}: query failed: {err or 'unexpected answer'}")
        return obj.get("data")

    def query_range(self, query: str, start: float, end: float, step: float) -> list[dict]:
        data = self._get(
            "/api/v1/query_range",
            {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise PrometheusError(f"{self.url}: expected a matrix answer for a range query")
        result = data.get("result")
        if not isinstance(result, list):
            raise PrometheusError(f"{self.url}: range answer has no result list")
        return result

    def signal_ages(self, now: float) -> dict[WorkloadRef, float]:
        """Seconds since each workload's newest run-queue sample was scraped (promql.signal_age);
        a workload without one is absent."""
        data = self._get("/api/v1/query", {"query": promql.signal_age(), "time": f"{now:.3f}"})
        result = data.get("result") if isinstance(data, dict) else None
        ages: dict[WorkloadRef, float] = {}
        for series in result if isinstance(result, list) else []:
            try:
                metric, age = series["metric"], float(series["value"][1])
                ref = WorkloadRef(str(metric["namespace"]), str(metric["workload"]))
            except (TypeError, KeyError, IndexError, ValueError):
                continue
            if math.isfinite(age):
                ages[ref] = age
        return ages

    def pods(self, now: float) -> dict[WorkloadRef, tuple[PodSample, ...]]:
        """Each workload's pods now: node, run-queue p95 and CPU usage (promql.pods)."""
        found: dict[tuple[WorkloadRef, str], dict[str, Any]] = {}
        for name, query in self.pod_queries.items():
            data = self._get("/api/v1/query", {"query": query, "time": f"{now:.3f}"})
            result = data.get("result") if isinstance(data, dict) else None
            for series in result if isinstance(result, list) else []:
                try:
                    m, value = series["metric"], float(series["value"][1])
                    ref = WorkloadRef(str(m["namespace"]), str(m["workload"]))
                    pod, node = str(m["pod"]), m.get("node")
                except (TypeError, KeyError, IndexError, ValueError):
                    continue
                entry = found.setdefault((ref, pod), {"node": node and str(node)})
                if math.isfinite(value) and value >= 0:
                    entry[name] = value
        out: dict[WorkloadRef, list[PodSample]] = defaultdict(list)
        for (ref, pod), fields in sorted(found.items()):
            out[ref].append(PodSample(pod, fields["node"], metric_ts=now, placement_only=True,
                                      cpu_usage_cores=fields.get("cpu_usage_cores"),
                                      runq_p95_seconds=fields.get("runq_p95_seconds")))
        return {ref: tuple(ps) for ref, ps in out.items()}

    def fetch(self, now: float, window_seconds: float, step_seconds: float) -> Fetched:
        """Samples for every workload seen in (now − window, now]; the newest sample of each
        workload carries its pods (for spreading)."""
        start = now - window_seconds
        table: dict[tuple[WorkloadRef, float], dict[str, float | None]] = defaultdict(dict)
        warnings: list[str] = []
        for name, query in self.queries.items():
            for series in self.query_range(query, start, now, step_seconds):
                if not isinstance(series, dict):
                    warnings.append(f"{name}: malformed series {str(series)[:80]}: ignored")
                    continue
                metric = series.get("metric") or {}
                ns = metric.get("namespace") if isinstance(metric, dict) else None
                wl = metric.get("workload") if isinstance(metric, dict) else None
                if not ns or not wl or not isinstance(ns, str) or not isinstance(wl, str):
                    continue
                ref = WorkloadRef(ns, wl)
                points = series.get("values") or []
                if not isinstance(points, list):
                    warnings.append(f"{ref.key} {name}: 'values' is not a list: ignored")
                    continue
                for point in points:
                    value = self._point(point, name, now, ref, warnings)
                    if value is None:
                        continue
                    table[(ref, value[0])][name] = value[1]
        samples = []
        for (ref, ts), fields in sorted(table.items()):
            vals: dict[str, Any] = {k: fields.get(k) for k in LIMITS}
            for k in ("replicas", "ready_replicas"):
                if vals[k] is not None:
                    vals[k] = int(round(vals[k]))
            samples.append(Sample(ts=ts, workload=ref, **vals))
        if self.pod_queries and samples:
            try:
                pods = self.pods(now)
            except PrometheusError as exc:  # spreading is a hint: the decisions go on without
                warnings.append(f"per-pod signals: {exc}")
                pods = {}
            newest: dict[WorkloadRef, int] = {s.workload: i for i, s in enumerate(samples)}
            for ref, i in newest.items():
                if ref in pods:
                    samples[i] = replace(samples[i], pods=pods[ref])
        return Fetched(samples, warnings)

    def _point(
        self, point: Any, name: str, now: float, ref: WorkloadRef, warnings: list[str]
    ) -> tuple[float, float | None] | None:
        try:
            ts = float(point[0])
            raw = point[1]
            value = float(raw)
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):
            warnings.append(f"{ref.key} {name}: malformed point {str(point)[:80]}: ignored")
            return None
        if not math.isfinite(ts) or ts < now - 10 * 86400 or ts > now + 3600:
            warnings.append(f"{ref.key} {name}: point at {ts!r} far from now {now:.0f}: ignored")
            return None
        if now - ts > self.staleness:
            warnings.append(f"{ref.key} {name}: stale point ({now - ts:.0f} s old): ignored")
            return None
        _, lo, hi = LIMITS[name]
        if not math.isfinite(value):
            warnings.append(f"{ref.key} {name}: {raw} at {ts:.0f}: treated as missing")
            return ts, None
        if value < lo or value > hi + (RATIO_SLACK if hi == 1.0 else 0.0):
            warnings.append(
                f"{ref.key} {name}: {value:g} outside [{lo:g}, {hi:g}] at {ts:.0f}: missing"
            )
            return ts, None
        return ts, min(value, hi)
