"""Kubernetes HPA v2 (autoscaling/v2) on CPU utilisation, as the controller-manager does it.

Follows pkg/controller/podautoscaler: `replica_calculator.go` (GetResourceReplicas, groupPods,
GetResourceUtilizationRatio) and `horizontal.go` (reconcileAutoscaler,
stabilizeRecommendationWithBehaviors, convertDesiredReplicasWithBehaviorRate, the scale-event
bookkeeping), with the v2 API defaults:

- utilisation = floor(100 · Σ usage / Σ request) in whole percent over pods with metrics
  (millicores, integer arithmetic as the controller does); ratio = utilisation / target percent;
- tolerance 0.1: no change while |1 − ratio| ≤ 0.1;
- pods being deleted or Failed are ignored; Pending pods are unready; pods without a metric are
  "missing"; a Running pod is unready when it has no Ready condition or start time, or, within the
  CPU initialisation period (300 s after start), when it is not Ready or its metric sample does not
  cover a full metric window after its last Ready transition, or, after that period, when it is
  not Ready and became so within the initial-readiness delay (30 s after start: never was ready);
- on a scale-up with unready pods, unready pods count as 0 % usage; missing pods count as 0 % on
  scale-up and as max(100 %, target) of their request on scale-down; the ratio is then recomputed
  and the change dropped if it now falls inside the tolerance or flips direction;
- no metrics at all (all pods unready/missing) is an error: no scaling, like the controller;
- current replicas 0 with min > 0: autoscaling disabled; current outside [min, max]: set to the
  bound without looking at metrics;
- stabilisation (seeded with the current count on the first decision, so a new HPA does not scale
  in during its first window): scale-up window 0 s, scale-down window 300 s (the
  `--horizontal-pod-autoscaler-downscale-stabilization` default): the recommendation is clamped to
  [min over the up-window, max over the down-window] of the unstabilised recommendations, the
  current one included; a recommendation counts while its timestamp is strictly after the cutoff;
- rate limits (defaults): scale-up max(+100 %, +4 pods) per 15 s; scale-down −100 % per 15 s;
  counted from the scale events of the policy period, as the controller counts its own scalings;
- the result is bounded by [min, max].

Where this module differs, and why: the controller runs every 15 s (`--horizontal-pod-autoscaler-
sync-period`); here the caller calls `decide` at that period (`PERIOD_SECONDS`). The controller
records a scale event after the Scale update succeeds; a policy cannot know, so it records one
whenever it recommends a change (in dry-run the event is what the controller would have done).
Without per-pod data the window's totals stand in: `ready_replicas` pods share the usage equally
and `replicas − ready_replicas` pods are unready (not yet ready, within the initialisation period).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    ScalerConfig,
    SignalWindow,
)
from runqscale.scaler.policies.hpa_calculator import (  # noqa: F401 - re-exported
    Evaluation,
    evaluate,
    group_pods,
    pods_from_totals,
)

NAME = "hpa"
PERIOD_SECONDS = 15.0


@dataclass(frozen=True)
class ScalingPolicy:
    kind: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window_seconds: int
    policies: tuple[ScalingPolicy, ...]
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"


DEFAULT_SCALE_UP = ScalingRules(
    0, (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)), "Max"
)
DEFAULT_SCALE_DOWN = ScalingRules(300, (ScalingPolicy("Percent", 100, 15),), "Max")


@dataclass(frozen=True)
class Params:
    tolerance: float = 0.1
    cpu_initialization_period_seconds: float = 300.0
    initial_readiness_delay_seconds: float = 30.0
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN


@dataclass(frozen=True)
class State:
    """Unstabilised recommendations and scale events, as the controller keeps them per HPA."""

    initialized: bool = False
    recommendations: tuple[tuple[float, int], ...] = ()
    scale_up_events: tuple[tuple[float, int], ...] = ()
    scale_down_events: tuple[tuple[float, int], ...] = ()


def initial_state() -> State:
    return State()


def _change_in_period(events: Sequence[tuple[float, int]], now: float, period: float) -> int:
    cutoff = now - period
    return sum(change for ts, change in events if ts > cutoff)


def scale_up_limit(current: int, state: State, now: float, rules: ScalingRules) -> int:
    """calculateScaleUpLimitWithScalingRules."""
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result: int | None = None
    for pol in rules.policies:
        added = _change_in_period(state.scale_up_events, now, pol.period_seconds)
        deleted = _change_in_period(state.scale_down_events, now, pol.period_seconds)
        start = current - added + deleted
        if pol.kind == "Pods":
            proposed = start + pol.value
        else:
            proposed = math.ceil(start * (1 + pol.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit(current: int, state: State, now: float, rules: ScalingRules) -> int:
    """calculateScaleDownLimitWithBehaviors."""
    if rules.select_policy == "Disabled":
        return current
    pick = max if rules.select_policy == "Min" else min
    result: int | None = None
    for pol in rules.policies:
        added = _change_in_period(state.scale_up_events, now, pol.period_seconds)
        deleted = _change_in_period(state.scale_down_events, now, pol.period_seconds)
        start = current - added + deleted
        if pol.kind == "Pods":
            proposed = start - pol.value
        else:
            proposed = int(start * (1 - pol.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def normalize(
    desired: int, current: int, config: ScalerConfig, state: State, now: float, params: Params
) -> tuple[int, str, State]:
    """normalizeDesiredReplicasWithBehaviors: stabilise, then rate-limit and bound.

    The first call seeds the scale-down window with the current replica count
    (maybeInitScaleDownStabilizationWindow): a fresh HPA does not scale in for one window.
    """
    if not state.initialized:
        seed = ((now, current),) if params.scale_down.stabilization_window_seconds > 0 else ()
        state = replace(state, initialized=True, recommendations=seed)
    up_cut = now - params.scale_up.stabilization_window_seconds
    down_cut = now - params.scale_down.stabilization_window_seconds
    up_rec = desired
    down_rec = desired
    for ts, rec in state.recommendations:
        if ts > up_cut:
            up_rec = min(rec, up_rec)
        if ts > down_cut:
            down_rec = max(rec, down_rec)
    stabilized = max(current, up_rec)
    stabilized = min(stabilized, down_rec)
    keep_after = min(up_cut, down_cut)
    recs = tuple(r for r in state.recommendations if r[0] > keep_after) + ((now, desired),)
    state = replace(state, recommendations=recs)
    why = ""
    if stabilized != desired:
        why = f"; stabilised to {stabilized} (window max {down_rec}, min {up_rec})"
    result = stabilized
    if stabilized > current:
        limit = max(scale_up_limit(current, state, now, params.scale_up), current)
        allowed = min(config.max_replicas, limit)
        if stabilized > allowed:
            result = allowed
            why += (
                f"; limited to {allowed} by "
                f"{'the scale-up rate' if allowed == limit else 'max replicas'}"
            )
    elif stabilized < current:
        limit = min(scale_down_limit(current, state, now, params.scale_down), current)
        allowed = max(config.min_replicas, limit)
        if stabilized < allowed:
            result = allowed
            why += (
                f"; limited to {allowed} by "
                f"{'the scale-down rate' if allowed == limit else 'min replicas'}"
            )
    return result, why, state


def _record_event(state: State, now: float, prev: int, new: int, params: Params) -> State:
    if new > prev:
        longest = max((p.period_seconds for p in params.scale_up.policies), default=0)
        kept = tuple(e for e in state.scale_up_events if e[0] > now - longest)
        return replace(state, scale_up_events=kept + ((now, new - prev),))
    if new < prev:
        longest = max((p.period_seconds for p in params.scale_down.policies), default=0)
        kept = tuple(e for e in state.scale_down_events if e[0] > now - longest)
        return replace(state, scale_down_events=kept + ((now, prev - new),))
    return state


def decide_replicas(
    window: SignalWindow,
    current: CurrentState,
    config: ScalerConfig,
    state: State | None,
    params: Params = Params(),
) -> tuple[int, str, State, bool]:
    """The HPA's answer: (replicas, reason, state, metrics_valid)."""
    state = state or State()
    now = window.now
    cur = current.replicas
    if cur == 0 and config.min_replicas != 0:
        return 0, "scaling is disabled: current replicas 0 with min replicas > 0", state, False
    if cur > config.max_replicas:
        new = config.max_replicas
        reason = f"current replicas {cur} above max {config.max_replicas}: set to max"
        return new, reason, _record_event(state, now, cur, new, params), True
    if cur < config.min_replicas:
        new = config.min_replicas
        reason = f"current replicas {cur} below min {config.min_replicas}: set to min"
        return new, reason, _record_event(state, now, cur, new, params), True
    ev = evaluate(window, current, config, params)
    if ev.replicas is None:
        return cur, ev.reason, state, False
    new, why, state = normalize(ev.replicas, cur, config, state, now, params)
    state = _record_event(state, now, cur, new, params)
    return new, f"{ev.reason}{why}; {cur} -> {new} replicas", state, True


def decide(
    window: SignalWindow,
    current: CurrentState,
    config: ScalerConfig,
    state: State | None,
    params: Params = Params(),
) -> tuple[Recommendation, State]:
    replicas, reason, state, _ = decide_replicas(window, current, config, state, params)
    recommended = replace(current, replicas=replicas)
    return Recommendation.decided(window, NAME, current, recommended, reason), state
