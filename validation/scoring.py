"""Scores of one run: latency percentiles, SLO violations, CPU core-seconds, and the runlang
paper's penalty with each of its terms.

Penalty (design.md, runlang paper), over 5 s batches i of requests (by scheduled send time):

    Σ_i succ_i · rt_i² / Σ_i succ_i  +  failure_rate · 30²  +  mean replicas

- rt_i: the mean response time (seconds) of batch i's successful requests; succ_i their count;
- failure_rate: failed requests / all requests (the paper writes a count; a rate is what gives
  its own reported scores, see design.md);
- mean replicas: the mean over the batches of the replica count (time-weighted within a batch).

Latency percentiles are over successful requests (HdrHistogram, 3 significant digits); failed
and timed-out requests are counted separately and are SLO violations. A response time is measured
from the request's *scheduled* send time, so a late send (generator behind) counts against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BATCH_SECONDS = 5.0
FAILURE_WEIGHT = 30.0**2


@dataclass(frozen=True)
class Requests:
    """One run's requests: parallel arrays, one entry per scheduled request."""

    scheduled: np.ndarray  # seconds from the run's start
    latency: np.ndarray  # seconds from scheduled send to response (NaN: no response)
    ok: np.ndarray  # bool: a 2xx answer whose body said the code ran
    late: np.ndarray  # seconds the send left after its scheduled time

    def __post_init__(self) -> None:
        n = self.scheduled.size
        for name in ("latency", "ok", "late"):
            if getattr(self, name).size != n:
                raise ValueError(f"{name} has {getattr(self, name).size} entries, expected {n}")

    @classmethod
    def empty(cls) -> Requests:
        z = np.zeros(0)
        return cls(z, z, np.zeros(0, dtype=bool), z)


@dataclass(frozen=True)
class Timeline:
    """The replica set sampled over time (step functions: a value holds until the next t)."""

    t: np.ndarray  # seconds from the run's start, increasing
    replicas: np.ndarray  # replicas serving or starting (what is allocated)
    limit_cores: np.ndarray  # per replica (CFS quota; 0 or NaN: no limit)
    used_cores: np.ndarray  # CPU used by all replicas over [t_k, t_{k+1})
    request_cores: np.ndarray | None = None  # per replica (None: equal to the limit)
    node_cpus: float | None = None  # the node's CPUs, shared by replicas without a limit
    # totals over several workloads (DeathStarBench's services), overriding the per-replica math
    requested_total: np.ndarray | None = None
    allocated_total: np.ndarray | None = None

    def requested(self) -> np.ndarray:
        """Cores requested at each step: replicas × request."""
        if self.requested_total is not None:
            return self.requested_total
        req = self.limit_cores if self.request_cores is None else self.request_cores
        return self.replicas * np.nan_to_num(req)

    def allocated(self) -> np.ndarray:
        """Cores allocated at each step: replicas × max(request, limit), where a replica with
        no limit is charged the node's share (node CPUs / replicas on it)."""
        if self.allocated_total is not None:
            return self.allocated_total
        return self.replicas * per_replica_allocation(
            self.request_cores, self.limit_cores, self.replicas, self.node_cpus)


def per_replica_allocation(request: np.ndarray | None, limit: np.ndarray,
                           replicas: np.ndarray, node_cpus: float | None) -> np.ndarray:
    """max(request, limit) per replica; no limit (0/NaN) -> node_cpus / replicas sharing it
    (0 when node_cpus is not known)."""
    lim = np.nan_to_num(np.asarray(limit, dtype=float))
    share = (node_cpus or 0.0) / np.maximum(np.asarray(replicas, dtype=float), 1.0)
    lim = np.where(lim > 0, lim, share)
    req = np.zeros_like(lim) if request is None else np.nan_to_num(np.asarray(request, float))
    return np.maximum(req, lim)


@dataclass(frozen=True)
class Penalty:
    latency: float
    failures: float
    replicas: float

    @property
    def total(self) -> float:
        return self.latency + self.failures + self.replicas


def penalty(req: Requests, replicas_by_batch: np.ndarray) -> Penalty:
    """The runlang penalty from requests and each 5 s batch's mean replica count."""
    n = req.scheduled.size
    if n == 0:
        lat = 0.0
        fail_rate = 0.0
    else:
        batch = (req.scheduled // BATCH_SECONDS).astype(int)
        nb = int(batch.max()) + 1
        ok = req.ok & np.isfinite(req.latency)
        succ = np.bincount(batch[ok], minlength=nb).astype(float)
        rt_sum = np.bincount(batch[ok], weights=req.latency[ok], minlength=nb)
        has = succ > 0
        rt = np.zeros(nb)
        rt[has] = rt_sum[has] / succ[has]
        lat = float((succ * rt**2).sum() / succ.sum()) if succ.sum() > 0 else 0.0
        fail_rate = float((~ok).sum()) / n
    mean_rep = float(np.mean(replicas_by_batch)) if len(replicas_by_batch) else 0.0
    return Penalty(lat, fail_rate * FAILURE_WEIGHT, mean_rep)


def _step_integral(t: np.ndarray, v: np.ndarray, t0: float, t1: float) -> float:
    """∫ v dt over [t0, t1) of a step function that holds v[k] on [t[k], t[k+1])."""
    if t.size == 0 or t1 <= t0:
        return 0.0
    edges = np.append(t, max(t1, float(t[-1])))
    lo = np.clip(edges[:-1], t0, t1)
    hi = np.clip(edges[1:], t0, t1)
    return float((v * (hi - lo)).sum())


def batch_replicas(tl: Timeline, seconds: float) -> np.ndarray:
    """Time-weighted mean replicas in each 5 s batch of [0, seconds)."""
    nb = max(1, int(math.ceil(seconds / BATCH_SECONDS - 1e-9)))
    out = np.zeros(nb)
    for i in range(nb):
        a, b = i * BATCH_SECONDS, min((i + 1) * BATCH_SECONDS, seconds)
        out[i] = _step_integral(tl.t, tl.replicas, a, b) / max(b - a, 1e-9)
    return out


@dataclass(frozen=True)
class RunScore:
    requests: int
    failed: int
    late: int  # sends that left more than `late_threshold` after schedule (still sent)
    p50_seconds: float | None
    p95_seconds: float | None
    p99_seconds: float | None
    slo_violation_ratio: float
    cpu_core_seconds_requested: float
    cpu_core_seconds_allocated: float
    cpu_core_seconds_used: float
    mean_replicas: float
    penalty: Penalty


def percentiles(latencies: np.ndarray, qs: tuple[float, ...] = (50, 95, 99)
                ) -> list[float | None]:
    """Percentiles (seconds) through an HdrHistogram (1 µs to 1 h, 3 significant digits)."""
    from hdrh.histogram import HdrHistogram

    lat = latencies[np.isfinite(latencies)]
    if lat.size == 0:
        return [None] * len(qs)
    h = HdrHistogram(1, 3_600_000_000, 3)
    for us in np.maximum(1, np.rint(lat * 1e6)).astype(np.int64):
        h.record_value(int(us))
    return [h.get_value_at_percentile(q) / 1e6 for q in qs]


def score(req: Requests, tl: Timeline, seconds: float, slo_seconds: float,
          late_threshold: float = 0.010) -> RunScore:
    ok = req.ok & np.isfinite(req.latency)
    p50, p95, p99 = percentiles(req.latency[ok])
    n = int(req.scheduled.size)
    violations = int((~ok).sum() + (req.latency[ok] > slo_seconds).sum())
    requested = _step_integral(tl.t, tl.requested(), 0.0, seconds)
    allocated = _step_integral(tl.t, tl.allocated(), 0.0, seconds)
    used = _step_integral(tl.t, tl.used_cores, 0.0, seconds)
    reps = batch_replicas(tl, seconds)
    return RunScore(
        requests=n,
        failed=int((~ok).sum()),
        late=int((req.late > late_threshold).sum()),
        p50_seconds=p50,
        p95_seconds=p95,
        p99_seconds=p99,
        slo_violation_ratio=violations / n if n else 0.0,
        cpu_core_seconds_requested=requested,
        cpu_core_seconds_allocated=allocated,
        cpu_core_seconds_used=used,
        mean_replicas=float(reps.mean()),
        penalty=penalty(req, reps),
    )
