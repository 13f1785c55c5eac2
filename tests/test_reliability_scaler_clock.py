"""Wall-clock jumps under the live scaler loop (issue 10), with injected time.

`PrometheusLoop.round(wall, mono)` (the loop of `runqscale scaler --prometheus`) runs SHOWAR every
3 s of monotonic time against a store that behaves like Prometheus where time matters: samples are
stamped with the (jumping) wall clock, a sample older than the newest stored one is rejected as
out of order, and range queries answer from what is stored. The simulated workload's replicas
follow the decisions. Invariants, in real (monotonic) time:

- no two actions within SHOWAR's 15 s cool-down;
- no scale-in below a count scaled out to less than the stabilisation window earlier;
- every decision is on a sample taken in the last step (a backward jump makes old samples look
  fresh; they must not be used);
- with forward jumps only, the decisions are those of the same run without jumps.

The controller (`scaler k8s`) uses the same WallClockGuard; its leader election is checked here
against a wall clock that steps, with a Lease held in memory.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.scaler.clock import WallClockGuard
from runqscale.scaler.k8s.client import ApiError
from runqscale.scaler.k8s.leader import LeaderElector
from runqscale.scaler.loops import PrometheusLoop
from runqscale.scaler.model import Recommendation, Sample, ScalerConfig, WorkloadRef
from runqscale.scaler.policies import get, showar
from runqscale.scaler.prometheus_source import Fetched
from runqscale.scaler.routine import DecisionRoutine

WL = WorkloadRef("shop", "web")
STEP_S = 3.0
COOLDOWN = showar.Params().cooldown_seconds
STABILISE = showar.Params().scale_in_stabilization_seconds
STEPS = 160
T0 = 1_750_000_000.0


@dataclass
class PromLike:
    """Samples by wall timestamp; older-than-newest appends are rejected (out of order)."""

    url: str = "http://prometheus.test"
    points: dict[float, tuple[float, Sample]] = field(default_factory=dict)  # ts -> (mono, s)

    def record(self, sample: Sample, mono: float) -> None:
        if not self.points or sample.ts > max(self.points):
            self.points[sample.ts] = (mono, sample)

    def fetch(self, now: float, window_seconds: float, step_seconds: float) -> Fetched:
        return Fetched([s for t, (_, s) in sorted(self.points.items())
                        if now - window_seconds < t <= now])

    def signal_ages(self, now: float) -> dict[WorkloadRef, float]:
        seen = [t for t in self.points if now - 300 < t <= now]  # Prometheus' 5 min lookback
        return {WL: now - max(seen)} if seen else {}


def _load(rng: random.Random) -> list[float]:
    """Replicas' worth of load per step: random plateaus, so both scale-out and scale-in occur."""
    out: list[float] = []
    while len(out) < STEPS:
        out += [rng.uniform(1.0, 8.0)] * rng.randint(5, 40)
    return out[:STEPS]


def _run(jumps: dict[int, float], seed: int,
         guard: WallClockGuard | None = None) -> list[tuple[float, Recommendation, float]]:
    """(mono, decision, mono of the sample it used) for every decision of one simulated run."""
    load = _load(random.Random(seed))
    store = PromLike()
    config = ScalerConfig(min_replicas=1, max_replicas=20, period_seconds=STEP_S)
    routine = DecisionRoutine(guard=guard or WallClockGuard())
    # the horizontal rules are the ones with windows a jump could empty (stabilisation)
    policy = replace(get("showar"), decide=functools.partial(
        showar.decide, params=showar.Params(vertical=False)))
    loop = PrometheusLoop(store, routine, policy, config, (), 60.0,  # type: ignore[arg-type]
                          300.0)
    replicas, offset, out = 2, 0.0, []
    for i in range(STEPS):
        offset += jumps.get(i, 0.0)
        mono = i * STEP_S
        wall = T0 + mono + offset
        p95 = 0.005 * (load[i] / replicas) ** 2.5
        store.record(Sample(wall, WL, replicas, replicas, 0.4 * replicas, 0.5, 1.0, p95, 0.0),
                     mono)
        for rec in loop.round(wall, mono):
            out.append((mono, rec, store.points[rec.ts][0]))
            if rec.action in ("scale_out", "scale_in"):
                replicas = rec.recommended.replicas
    return out


def _check_invariants(decisions: list[tuple[float, Recommendation, float]]) -> None:
    acted = [(m, r) for m, r, _ in decisions if r.action not in ("none", "affinity")]
    for (m1, _), (m2, r2) in zip(acted, acted[1:], strict=False):
        assert m2 - m1 >= COOLDOWN - 1e-6, \
            f"actions {m2 - m1:g} s apart (cool-down {COOLDOWN:g} s): {r2}"
    for m, r in acted:
        if r.action == "scale_in":
            recent_out = [o.recommended.replicas for mo, o in acted
                          if o.action == "scale_out" and m - STABILISE < mo < m]
            assert all(r.recommended.replicas >= n for n in recent_out), (
                f"scale-in to {r.recommended.replicas} at {m:g} s within {STABILISE:g} s of a "
                f"scale-out "
                f"to {recent_out}")
    for m, r, sampled in decisions:
        assert m - sampled <= STEP_S, f"decision at {m:g} s on a sample from {sampled:g} s: {r}"


def _key(decisions):
    return [(m, r.action, r.recommended.replicas) for m, r, _ in decisions]


jump_sizes = st.one_of(st.floats(-7200, -60), st.floats(60, 7200))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(jumps=st.dictionaries(st.integers(1, STEPS - 1), jump_sizes, max_size=3),
       seed=st.integers(0, 10_000))
def test_clock_jumps_never_bypass_cool_down_stabilisation_or_freshness(jumps, seed):
    _check_invariants(_run(jumps, seed))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(jumps=st.dictionaries(st.integers(1, STEPS - 1), st.floats(60, 7200), max_size=3),
       seed=st.integers(0, 10_000))
def test_forward_jumps_change_no_decision(jumps, seed):
    assert _key(_run(jumps, seed)) == _key(_run({}, seed))


def test_forward_jump_of_two_hours_after_a_scale_out_does_not_scale_in():
    # without the guard these scale in within the stabilisation window / act inside the cool-down
    for seed, at in ((9, 60), (1, 46)):
        decisions = _run({at: 7200.0}, seed)
        _check_invariants(decisions)
        assert _key(decisions) == _key(_run({}, seed))


def test_backward_jump_holds_until_the_clock_passes_the_old_samples():
    jump_at, back = 50, -200.0
    decisions = _run({jump_at: back}, seed=5)
    _check_invariants(decisions)
    during = [m for m, _, _ in decisions if jump_at * STEP_S <= m < jump_at * STEP_S - back]
    assert during == []  # 200 s of no decision: every stored sample looked fresh
    assert any(m >= jump_at * STEP_S - back + STEP_S for m, _, _ in decisions)  # and then again


def test_without_the_guard_a_backward_jump_decides_on_old_samples():
    """The simulation can fail: with the guard disabled the invariants break."""

    class NoGuard(WallClockGuard):
        def observe(self, wall: float, mono: float) -> str | None:
            return None

    with pytest.raises(AssertionError, match="on a sample from"):
        _check_invariants(_run({50: -200.0}, seed=5, guard=NoGuard()))
    with pytest.raises(AssertionError, match=r"within \d+ s of a scale-out"):
        _check_invariants(_run({60: 7200.0}, seed=9, guard=NoGuard()))
    with pytest.raises(AssertionError, match=r"cool-down \d+ s"):
        _check_invariants(_run({46: 7200.0}, seed=1, guard=NoGuard()))


# -- leader election against a stepping wall clock --------------------------------------------


class MemoryLeases:
    """The Lease calls LeaderElector makes, in memory (resourceVersion, 404, 409); `down`
    answers every call with status 0 like an unreachable server."""

    def __init__(self) -> None:
        self.obj: dict | None = None
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiError(0, "Unreachable", "connection refused")

    def get(self, p: str) -> dict:
        self._check()
        if self.obj is None:
            raise ApiError(404, "NotFound", p)
        return {**self.obj, "spec": dict(self.obj["spec"])}

    def create(self, p: str, body: dict) -> dict:
        self._check()
        self.obj = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        return self.obj

    def update(self, p: str, body: dict) -> dict:
        self._check()
        assert self.obj is not None
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", p)
        rv = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        self.obj = {**body, "metadata": {**body["metadata"], "resourceVersion": rv}}
        return self.obj


class Clocks:
    def __init__(self) -> None:
        self.wall, self.mono = T0, 0.0

    def tick(self, s: float) -> None:
        self.wall += s
        self.mono += s


def _elector(leases, clocks, identity):
    return LeaderElector(leases, "ns", "lease", identity, 15.0, 10.0, 2.0,  # type: ignore[arg-type]
                         clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)


def test_backward_wall_jump_does_not_extend_leadership_past_the_renew_deadline():
    leases, clocks = MemoryLeases(), Clocks()
    a = _elector(leases, clocks, "a")
    assert a.try_acquire_or_renew() and a.is_leader()
    leases.down = True
    clocks.wall -= 3600  # would have kept "now - renewed < deadline" true for an hour
    for _ in range(6):
        clocks.tick(2.0)
        a.try_acquire_or_renew()
    assert not a.is_leader()  # 12 s without a renewal > 10 s renew deadline


def test_forward_wall_jump_does_not_take_a_live_holders_lease():
    leases, clocks_a, clocks_b = MemoryLeases(), Clocks(), Clocks()
    a, b = _elector(leases, clocks_a, "a"), _elector(leases, clocks_b, "b")
    assert a.try_acquire_or_renew()
    clocks_b.wall += 7200  # b's wall clock leaps: a's renewTime looks two hours old
    for _ in range(20):
        for c in (clocks_a, clocks_b):
            c.tick(1.0)
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew() and not b.is_leader()
    assert leases.obj is not None and leases.obj["spec"]["holderIdentity"] == "a"
    assert not math.isnan(clocks_b.wall)


# -- the controller (`scaler k8s`) against the real API server, with injected clocks -----------


@pytest.mark.kubernetes
def test_controller_backward_jump_no_decision_on_old_samples_then_resumes(k8s_deployed):
    from k8s_helpers import deployment, ensure_namespace

    from runqscale.scaler.actuators.kubernetes import KubernetesActuator
    from runqscale.scaler.k8s import annotations as ann
    from runqscale.scaler.k8s.client import path
    from runqscale.scaler.k8s.controller import Controller
    from runqscale.scaler.k8s.events import EventRecorder

    ns, name = "clock", "jumpy"
    cp = k8s_deployed.cp
    ensure_namespace(cp, ns)
    cp.admin.create(path("Deployment", ns), deployment(name, annotations={
        ann.POLICY: "static", ann.MIN_REPLICAS: "2"}))
    clocks = Clocks()
    history: list[Sample] = []

    def record() -> None:
        history.append(Sample(clocks.wall, WorkloadRef(ns, name), replicas=1,
                              runq_p95_seconds=0.001, cpu_usage_cores=0.05))

    for _ in range(900):  # 15 minutes of samples, one a second, stamped by the wall clock
        record()
        clocks.tick(1.0)
    client = cp.client_for_token(k8s_deployed.token)
    actuator = KubernetesActuator(client, clock=lambda: clocks.wall)  # dry-run
    ctl = Controller(client, lambda now: list(history), actuator,
                     EventRecorder(client, instance="clock"), ScalerConfig(period_seconds=1.0),
                     "clock", namespaces=[ns], max_signal_age=5,
                     clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)

    def status() -> str:
        (o,) = [o for o in ctl.step() if o.workload == f"{ns}/{name}"]
        return o.status

    record()
    assert status() == "decided"
    top = clocks.wall
    clocks.wall -= 600  # back ten minutes: the samples stored then look fresh again
    for _ in range(3):
        clocks.tick(1.0)
        record()  # new samples, stamped at or before the old ones' times
        assert status() == "no-signals"
    clocks.wall, clocks.mono = top + 2.0, clocks.mono + 600  # ten minutes later, caught up
    record()
    assert status() == "decided"
