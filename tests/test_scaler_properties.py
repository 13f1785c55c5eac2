"""Properties of every policy (hypothesis): bounds, monotonicity in run-queue latency, no
oscillation on a constant signal, vertical floors, determinism."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scaler_helpers import NOW, window

from runqscale.scaler.model import CurrentState, ScalerConfig, SignalWindow
from runqscale.scaler.policies import POLICIES, showar, vpa

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HORIZONTAL = ("showar", "hpa", "phpa-linear", "phpa-knn", "static")


@st.composite
def scenario(draw: st.DrawFn) -> tuple[SignalWindow, CurrentState, ScalerConfig]:
    min_r = draw(st.integers(1, 5))
    max_r = draw(st.integers(min_r, 40))
    replicas = draw(st.integers(min_r, max_r))
    ready = draw(st.integers(0, replicas))
    n = draw(st.integers(1, 30))
    step = draw(st.sampled_from([1.0, 3.0, 15.0]))
    per = draw(st.floats(0.0, 8.0))
    noise = draw(st.floats(0.0, 0.5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    usage = np.clip(per * max(ready, 1) * (1 + noise * rng.standard_normal(n)), 0, None)
    target = draw(st.floats(0.001, 0.05))
    p95 = target * 10 ** draw(st.floats(-1.5, 1.0))  # 3 % .. 10 x the target
    p95s = np.clip(p95 * (1 + noise * rng.standard_normal(n)), 1e-6, None)
    req = draw(st.one_of(st.none(), st.floats(0.01, 4.0)))
    lim = None if req is None else req * draw(st.floats(1.0, 3.0))
    thr = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    w = window(
        n=n,
        step=step,
        replicas=replicas,
        ready_replicas=ready,
        cpu_usage_cores=usage,
        cpu_request_cores=req,
        cpu_limit_cores=lim,
        runq_p95_seconds=p95s,
        throttled_ratio=thr,
        pressure=draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
    )
    cfg = ScalerConfig(
        min_replicas=min_r,
        max_replicas=max_r,
        max_cpu_per_replica=draw(st.floats(0.5, 8.0)),
        target_runq_p95_seconds=target,
    )
    return w, CurrentState(replicas, req, lim), cfg


def _warm(name: str, w: SignalWindow, cur: CurrentState, cfg: ScalerConfig) -> Any:
    """A realistic state: one earlier decision on the window minus its last sample."""
    if w.ts.size < 2:
        return None
    earlier = SignalWindow(w.workload, w.ts[:-1], {k: v[:-1] for k, v in w.series.items()})
    return POLICIES[name].decide(earlier, cur, cfg, None)[1]


@SETTINGS
@given(scenario(), st.sampled_from(list(POLICIES)), st.booleans())
def test_replicas_stay_within_bounds(sc, name: str, warm: bool) -> None:
    w, cur, cfg = sc
    state = _warm(name, w, cur, cfg) if warm else None
    rec, _ = POLICIES[name].decide(w, cur, cfg, state)
    if name == "vpa":
        assert rec.recommended.replicas == cur.replicas
    else:
        assert cfg.min_replicas <= rec.recommended.replicas <= cfg.max_replicas


@SETTINGS
@given(scenario(), st.floats(1.0, 20.0), st.booleans(), st.booleans())
def test_more_latency_never_fewer_replicas(sc, factor: float, whole: bool, warm: bool) -> None:
    w, cur, cfg = sc
    state = _warm("showar", w, cur, cfg) if warm else None
    p95 = w.get("runq_p95_seconds")
    hotter = p95 * factor if whole else np.concatenate([p95[:-1], p95[-1:] * factor])
    w2 = SignalWindow(w.workload, w.ts, {**w.series, "runq_p95_seconds": hotter})
    low, _ = showar.decide(w, cur, cfg, state)
    high, _ = showar.decide(w2, cur, cfg, state)
    assert high.recommended.replicas >= low.recommended.replicas, (low.reason, high.reason)


def _direction_changes(xs: list[float]) -> int:
    deltas = [b - a for a, b in zip(xs, xs[1:], strict=False) if abs(b - a) > 1e-9]
    return sum(1 for a, b in zip(deltas, deltas[1:], strict=False) if (a > 0) != (b > 0))


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(HORIZONTAL + ("vpa",)),
    st.floats(1e-4, 0.2),
    st.floats(0.01, 6.0),
    st.integers(1, 10),
    st.floats(0.05, 2.0),
)
def test_no_oscillation_on_a_constant_signal(name, p95, per_cpu, replicas, req) -> None:
    """Signals constant per replica; recommendations applied at once: no back-and-forth."""
    pol = POLICIES[name]
    cfg = ScalerConfig(min_replicas=1, max_replicas=30)
    cur = CurrentState(replicas, req, 2 * req)
    state = None
    reps, reqs = [cur.replicas], [req]
    for k in range(120):
        now = NOW + pol.period_seconds * k
        w = window(
            n=20,
            step=pol.period_seconds,
            now=now,
            replicas=cur.replicas,
            ready_replicas=cur.replicas,
            cpu_usage_cores=per_cpu * cur.replicas,
            cpu_request_cores=cur.cpu_request_cores,
            cpu_limit_cores=cur.cpu_limit_cores,
            runq_p95_seconds=p95,
            throttled_ratio=0.0,
        )
        rec, state = pol.decide(w, cur, cfg, state)
        cur = rec.recommended
        reps.append(cur.replicas)
        reqs.append(cur.cpu_request_cores or 0.0)
    assert _direction_changes(reps) == 0, reps
    assert _direction_changes(reqs) == 0, reqs


@SETTINGS
@given(scenario(), st.booleans())
def test_vertical_never_below_floors(sc, warm: bool) -> None:
    w, cur, cfg = sc
    showar_floor = cfg.min_cpu_per_replica
    if showar_floor is None:
        showar_floor = showar.Params().sizing.min_cores
    # showar v2 floors the limit (the request keeps its ratio to it); VPA floors the request
    for name, floor, which in (
        ("showar", showar_floor, "cpu_limit_cores"),
        ("vpa", vpa.Params().pod_min_cpu_cores, "cpu_request_cores"),
    ):
        state = _warm(name, w, cur, cfg) if warm else None
        rec, _ = POLICIES[name].decide(w, cur, cfg, state)
        if rec.action != "none" and rec.recommended.cpu_request_cores != cur.cpu_request_cores:
            assert getattr(rec.recommended, which) >= floor - 1e-12
            lim = rec.recommended.cpu_limit_cores
            assert lim is None or lim >= rec.recommended.cpu_request_cores - 1e-12


def _state_key(s: Any) -> Any:
    if isinstance(s, vpa.State):
        return (s.weights.tobytes(), s.reference_ts, s.first_sample_ts, s.last_sample_ts, s.samples)
    return s


@SETTINGS
@given(scenario(), st.sampled_from(list(POLICIES)), st.booleans())
def test_decisions_are_deterministic(sc, name: str, warm: bool) -> None:
    w, cur, cfg = sc
    state = _warm(name, w, cur, cfg) if warm else None
    a, sa = POLICIES[name].decide(w, cur, cfg, state)
    # a copy of the window (fresh arrays) gives the same answer and state
    w2 = SignalWindow(w.workload, w.ts.copy(), {k: v.copy() for k, v in w.series.items()})
    b, sb = POLICIES[name].decide(w2, replace(cur), cfg, state)
    assert a.to_json() == b.to_json()
    assert _state_key(sa) == _state_key(sb)
