"""SHOWAR (Baarzi & Kesidis, SoCC 2021) on run-queue latency, and what runqscale adds to it.

Horizontal — a PID controller on the workload's run-queue p95 against `target_runq_p95_seconds`:

- error: relative, on a log scale by default, e = ln(p95 / target) (within the deadband this is
  the plain relative error (p95 − target) / target to within 0.5 %); `error="relative"` uses the
  plain form (at most −1 below the target, unbounded above);
- deadband: no horizontal change while |e| ≤ `deadband` (0.1, HPA's tolerance);
- u = Kp·e + I + Kd·(e − e_prev), I += Ki·e per decision; the desired count is
  ceil(basis × (1 + u)), where basis is the ready replicas (see start-up delay below);
- anti-windup: I is clamped to ±`integral_limit` and only integrates when the controller can act
  (outside the deadband, not in cool-down, no capacity pending) and the output is not clipped in
  the error's direction (integrating back out of a clip is always allowed);
- bounded step: at most +max(1, β·replicas) (β = 1: at most doubling) and −max(1, β_in·replicas)
  (β_in = 0.5) per decision; scale-in only to the maximum of the desired counts over the last
  `scale_in_stabilization_seconds` (120 s; seeded with the current count on the first decision);
- never below `min_replicas` or above `max_replicas`.

Starting point vs chosen defaults. A public reimplementation of SHOWAR runs every 3 s with
Kp = 10, Ki = 0, Kd = 10, a band of ±α/2 (α = 0.1) and steps of max(1, β·replicas), β = 1: the PID
output there only picks a direction. Here the output sizes the step, so the gains come from the
plant. A run queue's p95 grows like ρ/(1 − ρ) in the per-replica load ρ, so the plain relative
error is far from proportional to the capacity missing (at ρ = 0.9 it is +500 % for +50 % load),
and a linear controller on it overshoots: on the simulated plant of tests/test_scaler_pid.py,
error="relative" with Kp = 0.4 peaks 20–40 % above the ideal count after load steps of +25 % to
+200 %. The log error is close to proportional (d ln p95 / d ln ρ = 1/(1 − ρ) ≈ 2.5 near the
target, hence Kp = 0.25 ≈ 1/(2.5·1.6)) and reaches the ideal count in one step for the same
steps. Ki = 0 (as in the reimplementation): with Ki = 0.01 the loop sheds the last rounding
replica but then rides the band's upper edge (p95 above the band in 25–29 % of decisions on the
recorded trace, against 7 % without). Kd = 0: the derivative only added overshoot on the plant and
would amplify the ±19 % quantisation of a p95 read from histograms with two buckets per octave.
Both remain available. Period 3 s as SHOWAR; band ±10 % (HPA's tolerance; wider than α/2 = 5 %
because of that quantisation). `target_runq_p95_seconds` defaults to 5 ms (ScalerConfig):
provisional, to be tuned from measurements in the validation issue.

Vertical — every `vertical_period_seconds` (60 s), over `vertical_window_seconds` (5 min) of
per-replica CPU usage (total usage / ready replicas): s = mean + 3σ; act when s > 1.15 × request
or s < 0.55 × request (request unset: act); new request = max(s, floor 0.128 core), new limit =
`limit_factor` (2) × request.

Coordination —
- vertical first: per-replica demand is met by resizing; when the request would pass
  `max_cpu_per_replica`, it stays there and the workload scales out to carry the rest
  (ceil(s × replicas / max)); scale-in never goes below that count;
- one action per workload per cool-down (`cooldown_seconds`, 15 s);
- latency above the band with the container throttled by its own limit (throttled_ratio ≥
  `throttled_threshold`) → resize: limit × `throttle_growth` (or the vertical size if larger);
  latency above the band without throttling → starved by neighbours (pressure, contention) →
  scale out (the PID); spreading pods across nodes is the node-pressure recommendation
  (runqscale.scaler.spread), emitted beside this one.

Start-up delay (beyond SHOWAR; dry-run recommendation at first) — replicas requested but not yet
ready are capacity arriving: the PID's basis is the ready count (with the error capped at
`arriving_error_cap`, +100 %: an overloaded set's latency does not say how much is missing), so
the desired total already includes the pending replicas and a scale-up is not repeated while they
start; the integral does not integrate meanwhile. The delay from
"replicas > ready" to "ready = replicas" is measured from the signals and kept as an exponential
average; if replicas stay pending longer than `pending_timeout_factor` × that delay (e.g. no node
fits them), they are no longer counted as arriving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    ScalerConfig,
    SignalWindow,
    classify,
)

NAME = "showar"
PERIOD_SECONDS = 3.0


@dataclass(frozen=True)
class Params:
    error: Literal["relative", "log"] = "log"
    kp: float = 0.25
    ki: float = 0.0
    kd: float = 0.0
    deadband: float = 0.1
    integral_limit: float = 1.0
    max_step_fraction: float = 1.0  # β
    max_scale_in_fraction: float = 0.5  # β_in
    scale_in_stabilization_seconds: float = 120.0
    cooldown_seconds: float = 15.0
    vertical_period_seconds: float = 60.0
    vertical_window_seconds: float = 300.0
    vertical_min_samples: int = 3
    sigma_k: float = 3.0
    upper_hysteresis: float = 1.15
    lower_hysteresis: float = 0.55
    limit_factor: float = 2.0
    cpu_floor_cores: float = 0.128
    throttled_threshold: float = 0.1
    throttle_growth: float = 1.5
    account_startup_delay: bool = True
    default_startup_delay_seconds: float = 30.0
    startup_delay_smoothing: float = 0.3
    pending_timeout_factor: float = 3.0
    arriving_error_cap: float = 1.0


@dataclass(frozen=True)
class State:
    integral: float = 0.0
    prev_error: float | None = None
    last_ts: float | None = None
    last_action_ts: float | None = None
    last_vertical_ts: float | None = None
    desired_history: tuple[tuple[float, int], ...] = ()
    pending_since: float | None = None
    startup_delay_seconds: float | None = None
    delay_samples: int = 0


def initial_state() -> State:
    return State()


@dataclass(frozen=True)
class Vertical:
    """The vertical estimate: s = mean + kσ of per-replica usage, and the size it asks for."""

    s: float
    mean: float
    std: float
    samples: int
    request: float  # max(s, floor), capped at max_cpu_per_replica
    overflow_replicas: int  # replicas needed to carry s × n at the cap (n if no overflow)
    required_replicas: int  # ceil(s × n / cap): the fewest replicas that carry the demand


def vertical_estimate(
    window: SignalWindow, replicas: int, config: ScalerConfig, p: Params
) -> Vertical | None:
    w = window.since(window.now - p.vertical_window_seconds)
    usage = w.get("cpu_usage_cores")
    n = w.get("ready_replicas")
    n = np.where(np.isfinite(n) & (n > 0), n, w.get("replicas"))
    per = usage / n
    per = per[np.isfinite(per)]
    if per.size < p.vertical_min_samples:
        return None
    mean = float(per.mean())
    std = float(per.std())
    s = mean + p.sigma_k * std
    floor = max(p.cpu_floor_cores, config.min_cpu_per_replica or 0.0)
    cap = max(config.max_cpu_per_replica, floor)
    request = min(max(s, floor), cap)
    required = max(1, math.ceil(round(s * replicas / cap, 9)))
    overflow = max(replicas, required) if s > cap else replicas
    return Vertical(s, mean, std, int(per.size), request, overflow, required)


def _startup_tracking(window: SignalWindow, state: State, p: Params) -> State:
    """Update the pending-since mark and the measured start-up delay from new samples."""
    ts = window.ts
    start = 0 if state.last_ts is None else int(np.searchsorted(ts, state.last_ts, side="right"))
    if start >= ts.size:
        return state
    reps = window.get("replicas")
    ready = window.get("ready_replicas")
    pending_since = state.pending_since
    delay = state.startup_delay_seconds
    count = state.delay_samples
    for i in range(start, ts.size):
        if not (np.isfinite(reps[i]) and np.isfinite(ready[i])):
            continue
        if reps[i] > ready[i]:
            if pending_since is None:
                pending_since = float(ts[i])
        elif pending_since is not None:
            observed = float(ts[i]) - pending_since
            a = p.startup_delay_smoothing
            delay = observed if delay is None else (1 - a) * delay + a * observed
            count += 1
            pending_since = None
    return replace(
        state, pending_since=pending_since, startup_delay_seconds=delay, delay_samples=count
    )


def _error(p95: float, target: float, kind: str) -> float:
    """Relative error (p95 − target) / target, or its log form ln(p95 / target)."""
    if kind == "log":
        return math.log(max(p95, 1e-9) / target)
    return (p95 - target) / target


def _ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def decide(
    window: SignalWindow,
    current: CurrentState,
    config: ScalerConfig,
    state: State | None,
    params: Params = Params(),
) -> tuple[Recommendation, State]:
    p = params
    state = state or State()
    now = window.now
    cur = current.replicas
    state = _startup_tracking(window, state, p)

    def done(
        recommended: CurrentState, reason: str, new_state: State, acted: bool
    ) -> tuple[Recommendation, State]:
        if acted and classify(current, recommended) != "none":
            new_state = replace(new_state, last_action_ts=now)
        rec = Recommendation.decided(window, NAME, current, recommended, reason)
        return rec, replace(new_state, last_ts=now)

    if cur == 0 and config.min_replicas > 0:
        return done(current, "scaling is disabled: current replicas 0", state, False)
    if not config.min_replicas <= cur <= config.max_replicas:
        bound = config.clamp_replicas(cur)
        why = f"current replicas {cur} outside [{config.min_replicas}, {config.max_replicas}]"
        return done(replace(current, replicas=bound), f"{why}: set to {bound}", state, True)

    # --- signals
    target = config.target_runq_p95_seconds
    p95 = window.last("runq_p95_seconds")
    thr = window.last("throttled_ratio")
    pressure = window.last("pressure")
    ready_f = window.last("ready_replicas")
    ready = cur if ready_f is None else max(0, min(cur, int(ready_f)))
    pending = cur - ready
    in_cooldown = (
        state.last_action_ts is not None and now - state.last_action_ts < p.cooldown_seconds
    )
    vert = vertical_estimate(window, cur, config, p)

    # --- start-up delay: count pending replicas as arriving unless they are overdue
    delay = state.startup_delay_seconds or p.default_startup_delay_seconds
    overdue = (
        state.pending_since is not None
        and now - state.pending_since > p.pending_timeout_factor * delay
    )
    arriving = p.account_startup_delay and pending > 0 and not overdue
    basis = ready if arriving else cur

    # --- horizontal PID
    e = None if p95 is None else _error(p95, target, p.error)
    h_desired = cur
    pid_note = "no run-queue p95 in the last sample: horizontal holds"
    integral = state.integral
    if e is not None:
        in_band = abs(e) <= p.deadband
        # while capacity is arriving, an overloaded set's latency says little about how much is
        # missing: the error is capped, so the pending replicas are given a chance to land
        e_pid = min(e, p.arriving_error_cap) if arriving else e
        d_term = 0.0 if state.prev_error is None else p.kd * (e_pid - state.prev_error)
        can_act = not in_band and not in_cooldown and not arriving
        trial = max(-p.integral_limit, min(p.integral_limit, integral + p.ki * e_pid))
        u = p.kp * e_pid + (trial if can_act else integral) + d_term
        raw = math.ceil(round(max(basis, 1) * (1 + u), 9))
        up = cur + max(1, math.floor(p.max_step_fraction * cur))
        down = cur - max(1, math.floor(p.max_scale_in_fraction * cur))
        bounded = min(max(raw, down, config.min_replicas), up, config.max_replicas)
        if in_band:
            h_desired = cur
        elif e > 0:
            h_desired = max(bounded, cur)
        else:
            h_desired = min(bounded, cur)
        # conditional integration: not while the output is clipped in the error's direction
        # (integrating back out of a clip is always allowed, so the integral cannot get stuck)
        pushing = (raw > bounded and e_pid > 0) or (raw < bounded and e_pid < 0)
        if can_act and not pushing:
            integral = trial
        pid_note = (
            f"run-queue p95 {_ms(p95 or 0.0)} vs target {_ms(target)} ({p.error} error {e:+.2f}, "
            f"band ±{p.deadband:.0%}); PID u={u:+.3f} (P {p.kp * e_pid:+.3f}, I {integral:+.3f}, "
            f"D {d_term:+.3f}) on {basis} {'ready' if arriving else 'current'} replicas "
            f"-> {h_desired}"
        )
    history = state.desired_history
    if not history:
        history = ((now, cur),)  # seed: no scale-in during the first stabilisation window
    cutoff = now - p.scale_in_stabilization_seconds
    history = tuple(h for h in history if h[0] > cutoff) + ((now, h_desired),)
    state = replace(
        state,
        integral=integral,
        prev_error=e if e is not None else state.prev_error,
        desired_history=history,
    )
    if arriving:
        pid_note += (
            f"; {pending} replicas starting count as capacity arriving "
            f"(start-up delay {delay:.0f} s{' measured' if state.delay_samples else ' assumed'})"
        )

    vnote = "no vertical estimate (fewer than "
    vnote += f"{p.vertical_min_samples} CPU usage samples)"
    if vert is not None:
        vnote = (
            f"per-replica CPU mean {vert.mean:.3f} + {p.sigma_k:g}σ {vert.std:.3f} = "
            f"{vert.s:.3f} cores over {vert.samples} samples"
        )

    def size(request: float) -> CurrentState:
        return CurrentState(cur, request, p.limit_factor * request)

    # --- coordination
    if in_cooldown:
        ago = now - (state.last_action_ts or now)
        return done(
            current,
            f"cool-down: last action {ago:.0f} s ago (< {p.cooldown_seconds:g} s); {pid_note}",
            state,
            False,
        )
    above = e is not None and e > p.deadband
    below = e is not None and e < -p.deadband
    throttled = thr is not None and thr >= p.throttled_threshold
    if above and throttled:
        lim = current.cpu_limit_cores
        grown = (
            lim * p.throttle_growth / p.limit_factor
            if lim
            else (current.cpu_request_cores or p.cpu_floor_cores) * p.throttle_growth
        )
        want = max(grown, vert.s if vert else 0.0, p.cpu_floor_cores)
        cap = max(config.max_cpu_per_replica, p.cpu_floor_cores)
        request = min(want, cap)
        replicas = cur
        if want > cap:
            replicas = config.clamp_replicas(max(cur, math.ceil(round(want * cur / cap, 9))))
        if vert is not None:
            replicas = config.clamp_replicas(max(replicas, vert.overflow_replicas))
        rec = replace(size(request), replicas=replicas)
        reason = (
            f"throttled by its own limit (throttled ratio {thr:.2f} >= "
            f"{p.throttled_threshold:g}) while {pid_note}: resize request to {request:.3f} "
            f"cores, limit {p.limit_factor * request:.3f} ({vnote})"
        )
        if replicas > cur:
            reason += f"; past the {cap:g}-core per-replica maximum: scale out to {replicas}"
        state = replace(state, last_vertical_ts=now)
        return done(rec, reason, state, True)
    overflow = vert.overflow_replicas if vert else cur
    if above:
        replicas = config.clamp_replicas(max(cur, h_desired, overflow))
        cause = f"not throttled (ratio {thr:.2f})" if thr is not None else "throttling unknown"
        cause += f", CPU pressure {pressure:.2f}" if pressure is not None else ""
        if replicas > cur:
            reason = f"starved by neighbours ({cause}): scale out {cur} -> {replicas}; {pid_note}"
        else:
            reason = f"latency above target ({cause}) but no scale out: {pid_note}"
        return done(replace(current, replicas=replicas), reason, state, True)
    vertical_due = (
        state.last_vertical_ts is None or now - state.last_vertical_ts >= p.vertical_period_seconds
    )
    if vertical_due and vert is not None:
        state = replace(state, last_vertical_ts=now)
        req = current.cpu_request_cores
        hi = req is None or vert.request > p.upper_hysteresis * req
        lo = req is not None and vert.request < p.lower_hysteresis * req
        if hi or lo or overflow > cur:
            replicas = config.clamp_replicas(max(cur, overflow))
            rec = replace(size(vert.request), replicas=replicas)
            cmp = (
                "request unset"
                if req is None
                else f"{vert.request / req:.2f} × the {req:.3f}-core request, outside "
                f"[{p.lower_hysteresis:g}, {p.upper_hysteresis:g}]"
            )
            reason = (
                f"{vnote}: size {vert.request:.3f} cores is {cmp}: resize request to "
                f"{vert.request:.3f}, limit {p.limit_factor * vert.request:.3f}"
            )
            if replicas > cur:
                reason += (
                    f"; s passes the {config.max_cpu_per_replica:g}-core per-replica maximum: "
                    f"scale out {cur} -> {replicas}"
                )
            return done(rec, reason, state, True)
    if below:
        stable = max(h for _, h in history)
        required = vert.required_replicas if vert else 1
        floor_n = max(config.min_replicas, min(cur, required))
        replicas = min(cur, max(stable, floor_n))
        if replicas < cur:
            reason = (
                f"scale in {cur} -> {replicas}: the highest desired count over the last "
                f"{p.scale_in_stabilization_seconds:g} s; {pid_note}"
            )
        else:
            reason = (
                f"below target but holding {cur}: desired count within the last "
                f"{p.scale_in_stabilization_seconds:g} s was {stable}; {pid_note}"
            )
        return done(replace(current, replicas=replicas), reason, state, True)
    return done(current, f"no change: {pid_note}; {vnote}", state, False)
