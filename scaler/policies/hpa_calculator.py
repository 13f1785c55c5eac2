"""HPA's replica calculator (pkg/controller/podautoscaler/replica_calculator.go): the metric step
of runqscale.scaler.policies.hpa — pod grouping (ready, unready, missing, ignored), utilisation
in whole percent over millicores, and GetResourceReplicas' rules for unready and missing pods."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runqscale.scaler.model import CurrentState, PodSample, ScalerConfig, SignalWindow

if TYPE_CHECKING:
    from runqscale.scaler.policies.hpa import Params


@dataclass(frozen=True)
class Evaluation:
    """The metric step's answer: desired replicas (None when metrics are unusable) and why."""

    replicas: int | None
    utilization_pct: int | None
    reason: str


def _milli(cores: float) -> int:
    return int(round(cores * 1000.0))


def group_pods(
    pods: Sequence[PodSample], now: float, params: Params
) -> tuple[int, set[str], set[str], set[str]]:
    """groupPods: (ready count, unready names, missing names, ignored names)."""
    ready = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        if pod.cpu_usage_cores is None:
            missing.add(pod.name)
            continue
        if pod.ready is None or pod.start_ts is None:
            is_unready = True
        else:
            transition = (
                pod.ready_transition_ts if pod.ready_transition_ts is not None else (pod.start_ts)
            )
            if pod.start_ts + params.cpu_initialization_period_seconds > now:
                metric_ts = pod.metric_ts if pod.metric_ts is not None else now
                is_unready = (not pod.ready) or metric_ts < transition + pod.metric_window_seconds
            else:
                is_unready = (not pod.ready) and (
                    pod.start_ts + params.initial_readiness_delay_seconds > transition
                )
        if is_unready:
            unready.add(pod.name)
            continue
        ready += 1
    return ready, unready, missing, ignored


def _utilization(
    metrics: dict[str, int], requests: dict[str, int], target_pct: int
) -> tuple[float, int] | None:
    """GetResourceUtilizationRatio: (ratio, utilisation %) or None if no requests match."""
    used = 0
    req = 0
    for name, value in metrics.items():
        r = requests.get(name)
        if r is None:
            continue
        used += value
        req += r
    if req == 0:
        return None
    pct = (used * 100) // req
    return pct / target_pct, pct


def pods_from_totals(window: SignalWindow, current: CurrentState) -> tuple[PodSample, ...]:
    """Stand-in pods from the window's totals: ready pods share the usage; the rest are unready."""
    now = window.now
    replicas = current.replicas
    ready_f = window.last("ready_replicas")
    ready = replicas if ready_f is None else max(0, min(replicas, int(ready_f)))
    usage = window.last("cpu_usage_cores")
    per = None if usage is None or ready == 0 else usage / ready
    pods = [
        PodSample(f"ready-{i}", ready=True, start_ts=-math.inf, cpu_usage_cores=per, metric_ts=now)
        for i in range(ready)
    ]
    pods += [
        PodSample(f"starting-{i}", ready=False, start_ts=now, ready_transition_ts=now)
        for i in range(replicas - ready)
    ]
    return tuple(pods)


def evaluate(
    window: SignalWindow, current: CurrentState, config: ScalerConfig, params: Params
) -> Evaluation:
    """GetResourceReplicas for CPU: the metric's desired replica count."""
    now = window.now
    status = tuple(p for p in window.pods if not p.placement_only)
    pods = status or pods_from_totals(window, current)
    target_pct = int(round(config.target_cpu_utilization * 100))
    ready, unready, missing, ignored = group_pods(pods, now, params)
    metrics: dict[str, int] = {}
    requests: dict[str, int] = {}
    for pod in pods:
        req = (
            pod.cpu_request_cores
            if pod.cpu_request_cores is not None
            else (current.cpu_request_cores)
        )
        if req is None or req <= 0:
            return Evaluation(None, None, f"missing CPU request for pod {pod.name}: no scaling")
        requests[pod.name] = _milli(req)
        if (
            pod.cpu_usage_cores is not None
            and pod.name not in ignored
            and pod.name not in unready
            and pod.name not in missing
        ):
            metrics[pod.name] = _milli(pod.cpu_usage_cores)
    if not metrics:
        return Evaluation(
            None, None, "did not receive metrics for targeted pods (pods might be unready)"
        )
    first = _utilization(metrics, requests, target_pct)
    if first is None:
        return Evaluation(None, None, "no metrics returned matched known pods")
    ratio, pct = first
    tol = params.tolerance
    scale_up_with_unready = bool(unready) and ratio > 1.0
    base = (
        f"CPU utilisation {pct}% of the {target_pct}% target over {len(metrics)} pods "
        f"(ratio {ratio:.3f}, tolerance {tol:g}"
    )
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= tol:
            return Evaluation(current.replicas, pct, base + ": within tolerance)")
        desired = math.ceil(ratio * ready)
        return Evaluation(desired, pct, base + f"): ceil({ratio:.3f} × {ready}) = {desired}")
    if missing:
        if ratio < 1.0:
            fallback = max(100, target_pct)
            for name in missing:
                metrics[name] = requests[name] * fallback // 100
        elif ratio > 1.0:
            for name in missing:
                metrics[name] = 0
    if scale_up_with_unready:
        for name in unready:
            metrics[name] = 0
    second = _utilization(metrics, requests, target_pct)
    assert second is not None  # the same requests as before, plus more
    new_ratio, new_pct = second
    extra = (
        f"; {len(missing)} missing at {'100%' if ratio < 1 else '0%'}, "
        f"{len(unready)} unready at {'0%' if scale_up_with_unready else 'excluded'}: "
        f"recomputed {new_pct}% (ratio {new_ratio:.3f})"
    )
    if (
        abs(1.0 - new_ratio) <= tol
        or (ratio < 1.0 and new_ratio > 1.0)
        or (ratio > 1.0 and new_ratio < 1.0)
    ):
        return Evaluation(current.replicas, new_pct, base + extra + ": no change)")
    desired = math.ceil(new_ratio * len(metrics))
    if (new_ratio < 1.0 and desired > current.replicas) or (
        new_ratio > 1.0 and desired < current.replicas
    ):
        return Evaluation(current.replicas, new_pct, base + extra + ": direction flips)")
    return Evaluation(
        desired, new_pct, base + extra + f"): ceil({new_ratio:.3f} × {len(metrics)}) = {desired}"
    )
