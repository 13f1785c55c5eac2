"""Typed data for the scaler: signal windows, current state, config, recommendations.

Everything here is a frozen dataclass. Time is a float of unix seconds carried in the data (the
window's last sample is "now"); nothing reads the clock. Window series are numpy float64 arrays,
with NaN where a sample's field was missing (null in the signals file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Action = Literal["scale_out", "scale_in", "resize", "affinity", "none"]
ACTIONS: tuple[str, ...] = ("scale_out", "scale_in", "resize", "affinity", "none")

# The fields of one signals-file line that are series in a window (design.md contract), plus
# optional extensions: `pressure` (cpu.pressure "some" as a fraction, 0..1), and the time-weighted
# run-queue signals: `runq_wait_seconds_per_second` (run-queue wait summed over the workload's
# tasks, per second: the histogram's _sum rate) and `throttled_seconds_per_second` (CFS throttled
# time summed over its replicas, per second: cpu.stat throttled_time/throttled_usec rate), and
# that run-queue wait split by what held the CPU meanwhile (HOLDER_FIELDS: the agent's
# runqscale_runqueue_wait_by_holder_seconds_total rate per holder; absent where the agents cannot
# split, e.g. the bcc backend).
HOLDER_FIELDS: dict[str, str] = {
    "same_cgroup": "runq_wait_same_cgroup_seconds_per_second",
    "other_cgroup": "runq_wait_other_cgroup_seconds_per_second",
    "kernel": "runq_wait_kernel_seconds_per_second",
    "idle": "runq_wait_idle_seconds_per_second",
}
SERIES_FIELDS: tuple[str, ...] = (
    "replicas",
    "ready_replicas",
    "cpu_usage_cores",
    "cpu_request_cores",
    "cpu_limit_cores",
    "runq_p95_seconds",
    "throttled_ratio",
    "request_rate",
    "pressure",
    "runq_wait_seconds_per_second",
    "throttled_seconds_per_second",
    *HOLDER_FIELDS.values(),
)


@dataclass(frozen=True, order=True)
class WorkloadRef:
    """A scaled object: `namespace/name` of a Deployment (or another scalable kind)."""

    namespace: str
    name: str
    kind: str = "Deployment"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str, kind: str = "Deployment") -> WorkloadRef:
        """Parse `namespace/name`; raises ValueError naming the expected form."""
        ns, sep, name = text.partition("/")
        if not sep or not ns or not name or "/" in name:
            raise ValueError(f"expected 'namespace/name', got {text!r}")
        return cls(ns, name, kind)

    def to_json(self) -> dict[str, str]:
        return {"namespace": self.namespace, "kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class PodSample:
    """The latest view of one pod of a workload (optional; enables HPA's per-pod rules and spread).

    Fields mirror what the HPA reads from the pod status: phase, deletion, the Ready condition and
    its last transition time, the start time, and the metric sample's timestamp and window.
    """

    name: str
    node: str | None = None
    phase: str = "Running"  # Pending | Running | Succeeded | Failed
    deleting: bool = False
    ready: bool | None = True  # None: the pod has no Ready condition yet
    start_ts: float | None = None
    ready_transition_ts: float | None = None
    cpu_usage_cores: float | None = None  # None: the metrics API has no sample for this pod
    cpu_request_cores: float | None = None  # None: take the workload's per-replica request
    metric_ts: float | None = None
    metric_window_seconds: float = 15.0
    runq_p95_seconds: float | None = None
    # from the agent's per-pod metrics (Prometheus): where the pod runs and how long it waits,
    # for spreading; not the pod status (phase, readiness) that HPA's per-pod rules need
    placement_only: bool = False


@dataclass(frozen=True)
class Sample:
    """One line of the signals file: one workload at one time (per-replica request and limit)."""

    ts: float
    workload: WorkloadRef
    replicas: int | None = None
    ready_replicas: int | None = None
    cpu_usage_cores: float | None = None  # total over replicas
    cpu_request_cores: float | None = None  # per replica
    cpu_limit_cores: float | None = None  # per replica
    runq_p95_seconds: float | None = None
    throttled_ratio: float | None = None
    request_rate: float | None = None
    pressure: float | None = None
    runq_wait_seconds_per_second: float | None = None  # total over replicas
    throttled_seconds_per_second: float | None = None  # total over replicas
    # runq_wait_seconds_per_second split by holder (HOLDER_FIELDS), totals over replicas
    runq_wait_same_cgroup_seconds_per_second: float | None = None
    runq_wait_other_cgroup_seconds_per_second: float | None = None
    runq_wait_kernel_seconds_per_second: float | None = None
    runq_wait_idle_seconds_per_second: float | None = None
    pods: tuple[PodSample, ...] = ()


def _f(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _opt(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _replicas_divisor(w: SignalWindow) -> np.ndarray:
    n = w.get("ready_replicas")
    # no errstate (it costs more than the arithmetic here): NaN comparisons do not warn in
    # numpy 2
    n = np.where(np.isfinite(n) & (n > 0), n, w.get("replicas"))
    return np.where(n > 0, n, np.nan)


class _Tail(Mapping[str, np.ndarray]):
    """Each series of `whole` from index `start` on, sliced when read (`SignalWindow.since`)."""

    __slots__ = ("_start", "_whole")

    def __init__(self, whole: Mapping[str, np.ndarray], start: int) -> None:
        self._whole, self._start = whole, start

    def __getitem__(self, name: str) -> np.ndarray:
        return self._whole[name][self._start:]

    def get(self, name: str, default: Any = None) -> Any:  # the hot path: no KeyError raised
        arr = self._whole.get(name)
        return default if arr is None else arr[self._start:]

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole)

    def __len__(self) -> int:
        return len(self._whole)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


@dataclass(frozen=True, eq=False)
class SignalWindow:
    """A workload's recent signals: parallel series sorted by time; `now` is the last timestamp."""

    workload: WorkloadRef
    ts: np.ndarray
    series: Mapping[str, np.ndarray]
    pods: tuple[PodSample, ...] = ()

    def __post_init__(self) -> None:
        if self.ts.ndim != 1 or self.ts.size == 0:
            raise ValueError("a signal window needs at least one sample")
        for name, arr in self.series.items():
            if arr.shape != self.ts.shape:
                raise ValueError(f"series {name!r} has {arr.size} samples, ts has {self.ts.size}")

    @property
    def now(self) -> float:
        return float(self.ts[-1])

    def get(self, name: str) -> np.ndarray:
        """The series `name` (all-NaN if the window does not carry it). Read-only by contract:
        the arrays are the window's own (and the missing one is shared)."""
        arr = self.series.get(name)
        if arr is None:
            return self._missing
        return arr

    # computed once per window and kept in its __dict__ (which a frozen dataclass allows): a
    # policy reads these several times per decision (showar: ~15 series reads, 6 per-replica);
    # by hand, as functools.cached_property's first read per window takes a lock (Python 3.11)
    # and the scaler builds a new window for every decision
    def _derived(self, key: str, compute: Callable[[SignalWindow], np.ndarray]) -> np.ndarray:
        """A series derived from the window, once, read-only (it is shared); a part's
        (`since`) is the whole window's, sliced."""
        arr = self.__dict__.get(key)
        if arr is None:
            root = self.__dict__.get("_root")
            if root is not None:
                arr = root._derived(key, compute)[root.ts.size - self.ts.size:]
            else:
                arr = compute(self)
                arr.flags.writeable = False
            self.__dict__[key] = arr
        return arr

    @property
    def _missing(self) -> np.ndarray:
        return self._derived("_missing_cache", lambda w: np.full(w.ts.shape, np.nan))

    @property
    def replicas_divisor(self) -> np.ndarray:
        """What a total over replicas is divided by for a per-replica value: the ready replica
        count, else the current count, NaN where neither is > 0 (so a division gives NaN
        without a warning)."""
        return self._derived("_divisor_cache", _replicas_divisor)

    def last(self, name: str) -> float | None:
        """The last sample's value of `name`, None if missing (old values are not carried)."""
        arr = self.series.get(name)
        if arr is None:
            return None
        return _opt(float(arr[-1]))

    def index_since(self, t0: float) -> int:
        """The index of the first sample with ts >= t0 (the last one's if none is)."""
        return min(int(self.ts.searchsorted(t0, side="left")), self.ts.size - 1)

    def since(self, t0: float) -> SignalWindow:
        """The samples with ts >= t0 (at least the last one)."""
        i = self.index_since(t0)
        if i == 0:
            return self
        # a part of a validated window: built without __post_init__'s checks (a policy takes
        # several per decision); its series and derived series are the whole window's
        # (`_root`), sliced when read
        root = self.__dict__.get("_root", self)
        start = root.ts.size - self.ts.size + i
        part = object.__new__(SignalWindow)
        part.__dict__.update(workload=self.workload, ts=root.ts[start:],
                             series=_Tail(root.series, start), pods=self.pods, _root=root)
        return part

    @classmethod
    def from_samples(cls, samples: Sequence[Sample]) -> SignalWindow:
        """A window from one workload's samples (sorted by ts here; pods from the last one)."""
        if not samples:
            raise ValueError("a signal window needs at least one sample")
        ordered = sorted(samples, key=lambda s: s.ts)
        wl = ordered[0].workload
        ts = np.fromiter((s.ts for s in ordered), dtype=np.float64, count=len(ordered))
        series = {
            name: np.fromiter(
                (_f(getattr(s, name)) for s in ordered), dtype=np.float64, count=len(ordered)
            )
            for name in SERIES_FIELDS
        }
        return cls(wl, ts, series, ordered[-1].pods)


@dataclass(frozen=True)
class CurrentState:
    """The workload's size now: replicas and per-replica CPU request and limit (cores)."""

    replicas: int
    cpu_request_cores: float | None = None
    cpu_limit_cores: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "cpu_request_cores": _round_cores(self.cpu_request_cores),
            "cpu_limit_cores": _round_cores(self.cpu_limit_cores),
        }

    @classmethod
    def from_window(cls, window: SignalWindow) -> CurrentState:
        """Current state from the last sample. A missing replica count falls back to the ready
        count; with neither it is 0, which every policy treats as "scaling disabled" (the
        HPA's rule for a workload scaled to zero)."""
        r = window.last("replicas")
        if r is None:
            r = window.last("ready_replicas")
        return cls(
            0 if r is None else int(r),
            window.last("cpu_request_cores"),
            window.last("cpu_limit_cores"),
        )


def _round_cores(x: float | None) -> float | None:
    # millicore resolution, what Kubernetes quantities carry
    return None if x is None else round(float(x), 3)


@dataclass(frozen=True)
class ScalerConfig:
    """Per-workload bounds and targets shared by all policies (policy knobs live in each policy).

    `min_cpu_per_replica` None means "the policy's own floor" (SHOWAR 0.128 core, VPA 0.025 core).
    """

    min_replicas: int = 1
    max_replicas: int = 10
    min_cpu_per_replica: float | None = None
    max_cpu_per_replica: float = 4.0
    target_cpu_utilization: float = 0.75
    target_runq_p95_seconds: float = 0.005
    period_seconds: float | None = None  # None: the policy's default decision period

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(
                f"max_replicas must be >= max(min_replicas, 1), got {self.max_replicas}"
            )
        if not 0 < self.target_cpu_utilization <= 10:
            raise ValueError("target_cpu_utilization is a fraction of the request, e.g. 0.75")
        if not self.target_runq_p95_seconds > 0:
            raise ValueError("target_runq_p95_seconds must be > 0")
        if not self.max_cpu_per_replica > 0:
            raise ValueError("max_cpu_per_replica must be > 0")
        if self.min_cpu_per_replica is not None and not (
            0 <= self.min_cpu_per_replica <= self.max_cpu_per_replica
        ):
            raise ValueError("min_cpu_per_replica must be within [0, max_cpu_per_replica]")

    def clamp_replicas(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, n))


def classify(current: CurrentState, recommended: CurrentState) -> Action:
    """The action a change is: replica changes win over resizes."""
    if recommended.replicas > current.replicas:
        return "scale_out"
    if recommended.replicas < current.replicas:
        return "scale_in"
    if _round_cores(recommended.cpu_request_cores) != _round_cores(
        current.cpu_request_cores
    ) or _round_cores(recommended.cpu_limit_cores) != _round_cores(current.cpu_limit_cores):
        return "resize"
    return "none"


@dataclass(frozen=True)
class Recommendation:
    """One decision, as the recommendations log stores it (design.md contract)."""

    ts: float
    workload: WorkloadRef
    policy: str
    signals: Mapping[str, float | None]
    current: CurrentState
    recommended: CurrentState
    action: Action
    reason: str
    dry_run: bool = True
    applied: bool = False
    error: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")

    @classmethod
    def decided(cls, window: SignalWindow, policy: str, current: CurrentState,
                recommended: CurrentState, reason: str, action: Action | None = None,
                signals: Mapping[str, float | None] | None = None) -> Recommendation:
        """A policy's decision at the window's last sample; the action defaults to what the
        change is (see classify), the signals to the window's last sample's
        (signals_summary)."""
        return cls(
            ts=window.now, workload=window.workload, policy=policy,
            signals=signals_summary(window) if signals is None else signals, current=current,
            recommended=recommended, action=action or classify(current, recommended),
            reason=reason,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "workload": self.workload.to_json(),
            "policy": self.policy,
            "signals": {k: _opt_json(v) for k, v in self.signals.items()},
            "current": self.current.to_json(),
            "recommended": self.recommended.to_json(),
            "action": self.action,
            "reason": self.reason,
            "dry_run": self.dry_run,
            "applied": self.applied,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Recommendation:
        wl = obj["workload"]
        cur, rec = obj["current"], obj["recommended"]
        return cls(
            ts=float(obj["ts"]),
            workload=WorkloadRef(wl["namespace"], wl["name"], wl.get("kind", "Deployment")),
            policy=str(obj["policy"]),
            signals=dict(obj.get("signals") or {}),
            current=CurrentState(
                int(cur["replicas"]), cur.get("cpu_request_cores"), cur.get("cpu_limit_cores")
            ),
            recommended=CurrentState(
                int(rec["replicas"]), rec.get("cpu_request_cores"), rec.get("cpu_limit_cores")
            ),
            action=obj["action"],
            reason=str(obj["reason"]),
            dry_run=bool(obj["dry_run"]),
            applied=bool(obj["applied"]),
            error=obj.get("error"),
        )


def _opt_json(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def signals_summary(window: SignalWindow) -> dict[str, float | None]:
    """The last sample's signals, for the log's `signals` object."""
    return {
        "runq_p95_seconds": window.last("runq_p95_seconds"),
        "cpu_usage_cores": window.last("cpu_usage_cores"),
        "throttled_ratio": window.last("throttled_ratio"),
        "pressure": window.last("pressure"),
        "request_rate": window.last("request_rate"),
        "runq_wait_seconds_per_second": window.last("runq_wait_seconds_per_second"),
        "throttled_seconds_per_second": window.last("throttled_seconds_per_second"),
        "ready_replicas": window.last("ready_replicas"),
    }
