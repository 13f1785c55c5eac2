"""Kubernetes VPA recommender (vertical-pod-autoscaler/pkg/recommender) for CPU + updater rule.

- model: a decaying histogram of per-replica CPU usage — exponential buckets (first bucket 0.01
  core, ratio 1.05, up to 1000 cores), each sample weighted by max(request, 0.1 core) (so a raised
  request quickly outweighs old history) and by 2^(age / half-life) with a 24 h half-life; one
  sample per recommender interval (60 s);
- logic: percentile estimators (lower P50, target P90, upper P95), each with the 15 % safety
  margin, the upper bound × (1 + 1/confidence) and the lower bound × (1 + 0.001/confidence)^-2,
  where confidence = min(history span in days, samples / (60·24)); percentiles return the end of
  the bucket the percentile falls in, as the VPA histogram does; then the pod minimum 0.025 core
  (25 millicores) and the configured per-replica bounds;
- action: the updater acts when the current request lies outside [lower bound, upper bound]; the
  new request is the target; the limit keeps its current ratio to the request (controlled values
  RequestsAndLimits, the default); no limit stays no limit.

Per-replica usage is the window's total CPU usage divided by ready replicas (replicas if ready is
unknown). Early in a workload's life the confidence is low, so the bounds are wide and the VPA
rarely acts: that is the real VPA's behaviour and is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    ScalerConfig,
    SignalWindow,
)

NAME = "vpa"
PERIOD_SECONDS = 60.0


@dataclass(frozen=True)
class Params:
    first_bucket_cores: float = 0.01
    bucket_ratio: float = 1.05
    max_cores: float = 1000.0
    half_life_seconds: float = 24 * 3600.0
    min_sample_weight: float = 0.1
    sample_interval_seconds: float = 60.0
    target_percentile: float = 0.9
    lower_percentile: float = 0.5
    upper_percentile: float = 0.95
    safety_margin: float = 0.15
    pod_min_cpu_cores: float = 0.025


def _num_buckets(p: Params) -> int:
    return (
        int(
            math.ceil(
                math.log(p.max_cores * (p.bucket_ratio - 1) / p.first_bucket_cores + 1)
                / math.log(p.bucket_ratio)
            )
        )
        + 1
    )


def bucket_start(p: Params, bucket: np.ndarray | int) -> np.ndarray | float:
    return p.first_bucket_cores * (np.power(p.bucket_ratio, bucket) - 1) / (p.bucket_ratio - 1)


def find_bucket(p: Params, value: float) -> int:
    if value < p.first_bucket_cores:
        return 0
    b = int(
        math.log(value * (p.bucket_ratio - 1) / p.first_bucket_cores + 1) / math.log(p.bucket_ratio)
    )
    return min(b, _num_buckets(p) - 1)


@dataclass(frozen=True, eq=False)
class State:
    """The decaying histogram (weights relative to `reference_ts`) and its sample bookkeeping."""

    weights: np.ndarray
    reference_ts: float
    first_sample_ts: float | None
    last_sample_ts: float | None
    samples: int


def initial_state(params: Params = Params()) -> State:
    return State(np.zeros(_num_buckets(params)), 0.0, None, None, 0)


def add_sample(state: State, value: float, weight: float, ts: float, p: Params) -> State:
    """AddSample of the decaying histogram, shifting the reference time when the factor grows."""
    weights = state.weights
    ref = state.reference_ts if state.samples else ts
    exponent = (ts - ref) / p.half_life_seconds
    if exponent > 100.0:  # maxDecayExponent: renormalise so weights stay finite
        shift = math.floor(exponent)
        weights = weights * 2.0 ** (-shift)
        ref = ref + shift * p.half_life_seconds
        exponent = (ts - ref) / p.half_life_seconds
    weights = weights.copy()
    weights[find_bucket(p, value)] += weight * 2.0**exponent
    first = state.first_sample_ts if state.first_sample_ts is not None else ts
    return State(weights, ref, first, ts, state.samples + 1)


def percentile(state: State, q: float, p: Params) -> float:
    w = state.weights
    total = float(w.sum())
    if total <= 0:
        return 0.0
    cum = np.cumsum(w)
    nz = np.nonzero(w)[0]
    lo, hi = int(nz[0]), int(nz[-1])
    b = int(np.searchsorted(cum, q * total, side="left"))
    b = max(lo, min(b, hi))
    if b < w.size - 1:
        return float(bucket_start(p, b + 1))
    return float(bucket_start(p, b))


def confidence(state: State) -> float:
    if state.first_sample_ts is None or state.last_sample_ts is None:
        return 0.0
    days = (state.last_sample_ts - state.first_sample_ts) / 86400.0
    return min(days, state.samples / (60 * 24))


@dataclass(frozen=True)
class Estimate:
    lower: float
    target: float
    upper: float
    confidence: float


def estimate(state: State, config: ScalerConfig, p: Params) -> Estimate:
    margin = 1.0 + p.safety_margin
    c = confidence(state)
    target = percentile(state, p.target_percentile, p) * margin
    lower = percentile(state, p.lower_percentile, p) * margin
    upper = percentile(state, p.upper_percentile, p) * margin
    upper = upper * (1.0 + 1.0 / c) if c > 0 else math.inf
    lower = lower * (1.0 + 0.001 / c) ** -2.0 if c > 0 else 0.0
    floor = max(p.pod_min_cpu_cores, config.min_cpu_per_replica or 0.0)
    cap = config.max_cpu_per_replica

    def bound(x: float) -> float:
        return min(max(x, floor), cap)

    return Estimate(bound(lower), bound(target), bound(upper), c)


def ingest(window: SignalWindow, state: State, p: Params) -> State:
    """Add the window's samples not yet seen, at most one per recommender interval."""
    usage = window.get("cpu_usage_cores")
    ready = window.get("ready_replicas")
    replicas = window.get("replicas")
    request = window.get("cpu_request_cores")
    start = 0
    if state.last_sample_ts is not None:  # skip what was seen (windows overlap between calls)
        start = int(np.searchsorted(window.ts, state.last_sample_ts, side="right"))
    for i in range(start, window.ts.size):
        ts = float(window.ts[i])
        if (
            state.last_sample_ts is not None
            and ts < state.last_sample_ts + p.sample_interval_seconds
        ):
            continue
        n = ready[i] if np.isfinite(ready[i]) and ready[i] > 0 else replicas[i]
        u = usage[i]
        if not (np.isfinite(u) and np.isfinite(n) and n > 0):
            continue
        req = request[i] if np.isfinite(request[i]) else 0.0
        state = add_sample(state, float(u / n), max(float(req), p.min_sample_weight), ts, p)
    return state


def decide(
    window: SignalWindow,
    current: CurrentState,
    config: ScalerConfig,
    state: State | None,
    params: Params = Params(),
) -> tuple[Recommendation, State]:
    state = ingest(window, state if state is not None else initial_state(params), params)
    est = estimate(state, config, params)
    req = current.cpu_request_cores
    recommended = current
    if state.samples == 0:
        reason = "no CPU usage samples yet: no recommendation"
    elif req is None or req < est.lower or req > est.upper:
        limit = current.cpu_limit_cores
        if limit is not None and req:
            limit = est.target * (limit / req)
        recommended = replace(current, cpu_request_cores=est.target, cpu_limit_cores=limit)
        where = "unset" if req is None else ("below" if req < est.lower else "above")
        reason = (
            f"request {'unset' if req is None else f'{req:.3f}'} cores is {where} the VPA range "
            f"[{est.lower:.3f}, {est.upper:.3f}] (P50/P95 × 1.15 with confidence "
            f"{est.confidence:.3f} over {state.samples} samples): request -> target "
            f"P90 × 1.15 = {est.target:.3f} cores"
        )
    else:
        reason = (
            f"request {req:.3f} cores is within the VPA range [{est.lower:.3f}, {est.upper:.3f}] "
            f"(target {est.target:.3f}, {state.samples} samples): no change"
        )
    return Recommendation.decided(window, NAME, current, recommended, reason), state
