"""Reading signals: from a recorded JSON Lines file (design.md contract) or from Prometheus.

Signals file: one object per workload per sample, `{"ts", "workload": "<ns>/<name>", "replicas",
"ready_replicas", "cpu_usage_cores" (total), "cpu_request_cores", "cpu_limit_cores" (per replica),
"runq_p95_seconds", "throttled_ratio", "request_rate"}`; missing fields are null. Optional
extensions are read when present: "pressure" (cpu.pressure some, fraction 0..1), the time-weighted
run-queue fields (model.SERIES_FIELDS: runq_wait_seconds_per_second, throttled_seconds_per_second
and the wait split by holder, runq_wait_<holder>_seconds_per_second) and "pods" (a list of per-pod
objects with the PodSample field names, for HPA's per-pod rules and for spreading).
Unknown fields are ignored. A bad value is a SignalsError naming the file line and field.

Prometheus: runqscale.scaler.prometheus_source, which checks answers against the same LIMITS.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

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
RATIO_SLACK = 1e-6


class SignalsError(ValueError):
    """Bad signals input: `where` is 'file:line', `fieldname` the field, `fix` how to fix it."""

    def __init__(self, where: str, fieldname: str | None, message: str, fix: str) -> None:
        what = f"field {fieldname!r} " if fieldname else ""
        super().__init__(f"{where}: {what}{message}; {fix}")
        self.where = where
        self.fieldname = fieldname


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
    if v < lo or v > hi + (RATIO_SLACK if hi == 1.0 else 0.0):
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


def windows_from_samples(samples: Sequence[Sample]) -> dict[WorkloadRef, SignalWindow]:
    return {wl: SignalWindow.from_samples(ss) for wl, ss in group(samples).items()}
