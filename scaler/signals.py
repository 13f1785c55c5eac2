"""Reading signals: from a recorded JSON Lines file (design.md contract) or from Prometheus.

Signals file: one object per workload per sample, `{"ts", "workload": "<ns>/<name>", "replicas",
"ready_replicas", "cpu_usage_cores" (total), "cpu_request_cores", "cpu_limit_cores" (per replica),
"runq_p95_seconds", "throttled_ratio", "request_rate"}`; missing fields are null. Optional
extensions are read when present: "pressure" (cpu.pressure some, fraction 0..1), the time-weighted
run-queue fields (model.SERIES_FIELDS: runq_wait_seconds_per_second, throttled_seconds_per_second
and the wait split by holder, runq_wait_<holder>_seconds_per_second) and "pods" (a list of per-pod
objects with the PodSample field names, for HPA's per-pod rules and for spreading).
Unknown fields are ignored. A bad value is a SignalsError naming the file line and field.

Prometheus: the HTTP API's range queries (urllib, no extra dependency); queries are in
runqscale.scaler.promql. Each answer is validated: NaN, ±Inf, values beyond a field's sane range
and points older than `staleness_seconds` before `now` become missing (None) fields with a warning;
an unreachable server or a non-success answer is a PrometheusError with the URL and the reason.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from runqscale.scaler import promql
from runqscale.scaler.httpconfig import HttpClientConfig, HttpConfigError
from runqscale.scaler.model import HOLDER_FIELDS, PodSample, Sample, SignalWindow, WorkloadRef

# field -> (integer?, lowest, highest) sane values; beyond them a value is bad input (file) or
# dropped as missing (Prometheus).
LIMITS: dict[str, tuple[bool, float, float]] = {
    "replicas": (True, 0, 100_000),
    "ready_replicas": (True, 0, 100_000),
    "cpu_usage_cores": (False, 0.0, 100_000.0),
    "cpu_request_cores": (False, 0.0, 10_000.0),
    "cpu_limit_cores": (False, 0.0, 10_000.0),
    "runq_p95_seconds": (False, 0.0, 3600.0),
    "throttled_ratio": (False, 0.0, 1.0),
    "request_rate": (False, 0.0, 1e9),
    "pressure": (False, 0.0, 1.0),
    "runq_wait_seconds_per_second": (False, 0.0, 1e6),
    "throttled_seconds_per_second": (False, 0.0, 1e6),
    **{f: (False, 0.0, 1e6) for f in HOLDER_FIELDS.values()},
}
# Floating-point slack for ratios computed from counters (e.g. 1.0000001)
_RATIO_SLACK = 1e-6


class SignalsError(ValueError):
    """Bad signals input: `where` is 'file:line', `fieldname` the field, `fix` how to fix it."""

    def __init__(self, where: str, fieldname: str | None, message: str, fix: str) -> None:
        what = f"field {fieldname!r} " if fieldname else ""
        super().__init__(f"{where}: {what}{message}; {fix}")
        self.where = where
        self.fieldname = fieldname


class PrometheusError(RuntimeError):
    pass


def _number(value: Any, name: str, where: str) -> float | None:
    if value is None:
        return None
    integer, lo, hi = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SignalsError(where, name, f"must be a number or null, got {value!r}", _fix(name))
    try:
        v = float(value)
    except OverflowError:  # an integer beyond a float's range
        v = math.inf
    if not math.isfinite(v):
        raise SignalsError(where, name, f"must be finite, got {value!r}", _fix(name))
    if integer and v != int(v):
        raise SignalsError(where, name, f"must be a whole number, got {value!r}", _fix(name))
    if v < lo or v > hi + (_RATIO_SLACK if hi == 1.0 else 0.0):
        raise SignalsError(
            where, name, f"must be within [{lo:g}, {hi:g}], got {value!r}", _fix(name)
        )
    return min(v, hi)


def _fix(name: str) -> str:
    unit = {
        "replicas": "a replica count",
        "ready_replicas": "a replica count",
        "cpu_usage_cores": "cores used in total (e.g. 1.5)",
        "cpu_request_cores": "cores per replica (e.g. 0.5)",
        "cpu_limit_cores": "cores per replica (e.g. 1.0)",
        "runq_p95_seconds": "seconds (e.g. 0.004 for 4 ms)",
        "throttled_ratio": "a fraction of CFS periods throttled, 0..1",
        "request_rate": "requests per second",
        "pressure": "a fraction 0..1",
        "runq_wait_seconds_per_second": "run-queue wait seconds per second, summed over tasks",
        "throttled_seconds_per_second": "CFS throttled seconds per second, summed over replicas",
        **{f: f"run-queue wait seconds per second while {h} held the CPU, summed over tasks"
           for h, f in HOLDER_FIELDS.items()},
    }[name]
    return f"write {unit}, or null if unknown"


_POD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "node": (str, type(None)),
    "phase": str,
    "deleting": bool,
    "ready": (bool, type(None)),
    "start_ts": (int, float, type(None)),
    "ready_transition_ts": (int, float, type(None)),
    "cpu_usage_cores": (int, float, type(None)),
    "cpu_request_cores": (int, float, type(None)),
    "metric_ts": (int, float, type(None)),
    "metric_window_seconds": (int, float),
    "runq_p95_seconds": (int, float, type(None)),
}


def _pods(value: Any, where: str) -> tuple[PodSample, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SignalsError(where, "pods", "must be a list of pod objects", "or leave it out")
    pods = []
    for i, obj in enumerate(value):
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise SignalsError(
                where, f"pods[{i}]", "must be an object with a string 'name'", "fix that pod"
            )
        kwargs = {}
        for k, v in obj.items():
            want = _POD_FIELDS.get(k)
            if want is None:
                continue
            ok = isinstance(v, want) and not (
                isinstance(v, bool) and bool not in (want if isinstance(want, tuple) else (want,))
            )
            if not ok or (isinstance(v, float) and not math.isfinite(v)):
                raise SignalsError(
                    where, f"pods[{i}].{k}", f"has a bad value {v!r}", "see PodSample's fields"
                )
            kwargs[k] = v
        pods.append(PodSample(**kwargs))
    return tuple(pods)


def parse_sample(obj: Any, where: str) -> Sample:
    """One signals-file object -> Sample; SignalsError names the field and the fix."""
    if not isinstance(obj, dict):
        raise SignalsError(where, None, "is not a JSON object", "write one object per line")
    ts = obj.get("ts")
    if (
        isinstance(ts, bool)
        or not isinstance(ts, int | float)
        or not math.isfinite(float(ts) if isinstance(ts, float) or abs(ts) < 2**53 else math.inf)
        or ts < 0
    ):
        raise SignalsError(where, "ts", f"must be unix seconds, got {ts!r}", "e.g. 1719300000.0")
    wl = obj.get("workload")
    if not isinstance(wl, str):
        raise SignalsError(
            where, "workload", f"must be 'namespace/name', got {wl!r}", "e.g. 'default/web'"
        )
    try:
        ref = WorkloadRef.parse(wl)
    except ValueError as exc:
        raise SignalsError(where, "workload", str(exc), "e.g. 'default/web'") from None
    values: dict[str, Any] = {name: _number(obj.get(name), name, where) for name in LIMITS}
    for name in ("replicas", "ready_replicas"):
        if values[name] is not None:
            values[name] = int(values[name])
    return Sample(ts=float(ts), workload=ref, pods=_pods(obj.get("pods"), where), **values)


def read_file(path: str | os.PathLike[str]) -> list[Sample]:
    """All samples of a signals file; blank lines are skipped."""
    out = []
    name = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{name}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SignalsError(
                    where, None, f"is not valid JSON ({exc.msg})", "write one JSON object per line"
                ) from None
            out.append(parse_sample(obj, where))
    if not out:
        raise SignalsError(name, None, "has no samples", "record at least one line")
    return out


def group(samples: Iterable[Sample]) -> dict[WorkloadRef, list[Sample]]:
    """Samples per workload, each list sorted by ts (a later duplicate ts replaces an earlier)."""
    by: dict[WorkloadRef, dict[float, Sample]] = defaultdict(dict)
    for s in samples:
        by[s.workload][s.ts] = s
    return {wl: [d[t] for t in sorted(d)] for wl, d in sorted(by.items())}


def window_at(full: SignalWindow, now: float, length_seconds: float) -> SignalWindow | None:
    """The slice (now − length, now] of a full recorded window; None if it has no sample."""
    hi = int(np.searchsorted(full.ts, now, side="right"))
    lo = int(np.searchsorted(full.ts, now - length_seconds, side="right"))
    if hi <= lo:
        return None
    if lo == 0 and hi == full.ts.size:
        return full
    return SignalWindow(
        full.workload, full.ts[lo:hi], {k: v[lo:hi] for k, v in full.series.items()}, full.pods
    )


# --------------------------------------------------------------------------- Prometheus


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
        if value < lo or value > hi + (_RATIO_SLACK if hi == 1.0 else 0.0):
            warnings.append(
                f"{ref.key} {name}: {value:g} outside [{lo:g}, {hi:g}] at {ts:.0f}: missing"
            )
            return ts, None
        return ts, min(value, hi)


def windows_from_samples(samples: Sequence[Sample]) -> dict[WorkloadRef, SignalWindow]:
    return {wl: SignalWindow.from_samples(ss) for wl, ss in group(samples).items()}
