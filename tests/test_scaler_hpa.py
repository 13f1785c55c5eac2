"""HPA v2 rules, case by case, written from the Kubernetes documentation and controller behaviour.

Each table row is one rule: metric evaluation (tolerance, integer utilisation, missing metrics,
unready pods, ignored pods, errors), then normalisation (stabilisation windows, rate limits,
bounds) and the end-to-end decision. Numbers are worked out in the row comments.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from test_scaler_helpers import NOW, window

from runqscale.scaler.model import CurrentState, PodSample, ScalerConfig
from runqscale.scaler.policies import hpa
from runqscale.scaler.policies.hpa import Params, ScalingPolicy, ScalingRules, State

P = Params()


def ready(name: str, usage: float | None, request: float = 1.0) -> PodSample:
    """A pod ready long ago (past the CPU initialisation period)."""
    return PodSample(
        name,
        ready=True,
        start_ts=NOW - 3600,
        ready_transition_ts=NOW - 3500,
        cpu_usage_cores=usage,
        cpu_request_cores=request,
        metric_ts=NOW,
    )


def starting(name: str, usage: float | None = 0.05) -> PodSample:
    """A pod started 20 s ago, not ready yet (within the initialisation period)."""
    return PodSample(
        name,
        ready=False,
        start_ts=NOW - 20,
        ready_transition_ts=NOW - 20,
        cpu_usage_cores=usage,
        cpu_request_cores=1.0,
        metric_ts=NOW,
    )


@dataclass(frozen=True)
class EvalCase:
    name: str
    pods: tuple[PodSample, ...]
    expected: int | None  # None: metrics unusable, no scaling
    target: float = 0.75
    current: int | None = None  # default: number of pods


EVAL_CASES = [
    EvalCase(
        "scale up: 3 x 90% of 75% -> ratio 1.2 -> ceil(3.6)=4",
        tuple(ready(f"p{i}", 0.9) for i in range(3)),
        4,
    ),
    EvalCase(
        "scale down: 4 x 30% -> ratio 0.4 -> ceil(1.6)=2",
        tuple(ready(f"p{i}", 0.3) for i in range(4)),
        2,
    ),
    EvalCase(
        "tolerance: 56% of 50% -> ratio 1.12 > 1.1 -> ceil(4.48)=5",
        tuple(ready(f"p{i}", 0.56) for i in range(4)),
        5,
        target=0.5,
    ),
    EvalCase(
        "tolerance: 54% of 50% -> ratio 1.08 within 0.1 -> keep 4",
        tuple(ready(f"p{i}", 0.54) for i in range(4)),
        4,
        target=0.5,
    ),
    # float64 like the Go controller: |1 - 55/50| = 0.10000000000000009 > 0.1 -> scales,
    # |1 - 45/50| = 0.09999999999999998 <= 0.1 -> does not.
    EvalCase(
        "tolerance edge: ratio exactly 1.1 (55/50) scales in float64 -> ceil(4.4)=5",
        tuple(ready(f"p{i}", 0.55) for i in range(4)),
        5,
        target=0.5,
    ),
    EvalCase(
        "tolerance edge: ratio exactly 0.9 (45/50) stays within tolerance -> keep 4",
        tuple(ready(f"p{i}", 0.45) for i in range(4)),
        4,
        target=0.5,
    ),
    EvalCase(
        "tolerance edge: 44% of 50% -> ratio 0.88 -> ceil(3.52)=4 (no change by rounding)",
        tuple(ready(f"p{i}", 0.44) for i in range(4)),
        4,
        target=0.5,
    ),
    EvalCase(
        "just outside tolerance: 40% of 50% -> ratio 0.8 x 10 pods -> 8",
        tuple(ready(f"p{i}", 0.40) for i in range(10)),
        8,
        target=0.5,
    ),
    # 2.488 / 3 cores = 82.93 % truncates to 82 % -> 82/75 = 1.0933 within tolerance; without
    # the integer truncation it would be 1.1057 and scale.
    EvalCase(
        "utilisation is whole percent, truncated: 82.9% -> 82% -> within tolerance",
        (ready("a", 0.829), ready("b", 0.829), ready("c", 0.830)),
        3,
    ),
    EvalCase(
        "requests are summed per pod: 2 pods, requests 1 and 3, usage 3.2 -> 80% -> keep",
        (ready("a", 1.0, request=1.0), ready("b", 2.2, request=3.0)),
        2,
    ),
    # missing metrics: 3 x 30% and one missing: ratio 0.4 < 1 -> missing counts 100 %:
    # (900 + 1000) / 4000 = 47 % -> 0.6267 -> ceil(2.507)=3 (ignoring it would give 2)
    EvalCase(
        "missing metric on scale-down counts as 100%: -> 3",
        (*(ready(f"p{i}", 0.3) for i in range(3)), ready("m", None)),
        3,
    ),
    # target above 100 %: missing pods count as the target (max(100, target))
    # 3 x 90 % and one missing: ratio 1.2 > 1 -> missing counts 0 %: 2700/4000 = 67 % -> 0.893
    # -> the direction flips -> no change
    EvalCase(
        "missing metric on scale-up counts as 0%; direction flips -> keep 4",
        (*(ready(f"p{i}", 0.9) for i in range(3)), ready("m", None)),
        4,
    ),
    # 2 x 150 % and 2 missing: ratio 2.0 -> with zeros 3000/4000 = 75 % -> 1.0 -> tolerance
    EvalCase(
        "missing metrics on scale-up: recomputed ratio within tolerance -> keep 4",
        (ready("a", 1.5), ready("b", 1.5), ready("m1", None), ready("m2", None)),
        4,
    ),
    # 3 x 150 %, one missing: ratio 2.0; zeros -> 4500/4000 = 112 % -> 1.4933 -> ceil(5.97)=6
    EvalCase(
        "missing metric on scale-up still scales when the recomputed ratio is > 1.1",
        (*(ready(f"p{i}", 1.5) for i in range(3)), ready("m", None)),
        6,
    ),
    # unready: 2 ready at 120 % (ratio 1.6), 2 starting -> count 0 %: 2400/4000 = 60 % -> 0.8:
    # flips -> no change
    EvalCase(
        "unready pods count 0% on scale-up; direction flips -> keep 4",
        (ready("a", 1.2), ready("b", 1.2), starting("s1"), starting("s2")),
        4,
    ),
    # 3 ready at 150 % (ratio 2.0), 1 starting at 0 %: 4500/4000 = 112 % -> ceil(1.4933*4)=6
    EvalCase(
        "unready pods count 0% on scale-up -> ceil(1.4933 x 4) = 6",
        (*(ready(f"p{i}", 1.5) for i in range(3)), starting("s")),
        6,
    ),
    # unready pods are excluded on scale-down: 2 ready at 30 % -> 0.4 -> ceil(0.8)=1
    EvalCase(
        "unready pods are excluded on scale-down: ceil(0.4 x 2 ready) = 1",
        (ready("a", 0.3), ready("b", 0.3), starting("s1", 0.9), starting("s2", 0.9)),
        1,
    ),
    EvalCase(
        "unready pods within tolerance: ratio 1.0 over ready pods -> keep 3",
        (ready("a", 0.75), ready("b", 0.75), starting("s", 0.0)),
        3,
    ),
    EvalCase(
        "Pending pods are unready even without metrics",
        (
            ready("a", 1.5),
            ready("b", 1.5),
            replace(starting("s"), phase="Pending", cpu_usage_cores=None),
        ),
        # ratio 2.0, pending at 0 %: 3000/3000 = 100 % -> 1.333 -> ceil(4.0)=4
        4,
    ),
    EvalCase(
        "Failed and deleting pods are ignored",
        (
            *(ready(f"p{i}", 0.3) for i in range(3)),
            replace(ready("f", 5.0), phase="Failed"),
            replace(ready("d", 5.0), deleting=True),
        ),
        # 3 x 30 %: ratio 0.4 -> ceil(1.2)=2
        2,
    ),
    EvalCase(
        "no Ready condition -> unready",
        (ready("a", 0.3), ready("b", 0.3), replace(ready("n", 0.9), ready=None)),
        1,
    ),
    # within the initialisation period (started 60 s ago), Ready 10 s ago: the metric (window
    # 15 s) does not cover a full window since becoming ready -> unready (excluded on scale down)
    EvalCase(
        "initialisation period: metric window not complete since Ready -> unready",
        (
            ready("a", 0.3),
            ready("b", 0.3),
            PodSample(
                "w",
                ready=True,
                start_ts=NOW - 60,
                ready_transition_ts=NOW - 10,
                cpu_usage_cores=0.9,
                cpu_request_cores=1.0,
                metric_ts=NOW,
            ),
        ),
        1,
    ),
    EvalCase(
        "initialisation period: Ready 30 s ago with a full metric window -> counted",
        (
            ready("a", 0.3),
            ready("b", 0.3),
            PodSample(
                "w",
                ready=True,
                start_ts=NOW - 60,
                ready_transition_ts=NOW - 30,
                cpu_usage_cores=0.9,
                cpu_request_cores=1.0,
                metric_ts=NOW,
            ),
        ),
        # (300 + 300 + 900) / 3000 = 50 % -> 0.6667 -> ceil(2.0)=2
        2,
    ),
    EvalCase(
        "after initialisation: not Ready and never was (unready 10 s after start)",
        (
            ready("a", 0.3),
            ready("b", 0.3),
            PodSample(
                "x",
                ready=False,
                start_ts=NOW - 1000,
                ready_transition_ts=NOW - 990,
                cpu_usage_cores=0.9,
                cpu_request_cores=1.0,
                metric_ts=NOW,
            ),
        ),
        1,
    ),
    EvalCase(
        "after initialisation: not Ready but was ready before -> its metric counts",
        (
            ready("a", 0.3),
            ready("b", 0.3),
            PodSample(
                "x",
                ready=False,
                start_ts=NOW - 1000,
                ready_transition_ts=NOW - 500,
                cpu_usage_cores=0.9,
                cpu_request_cores=1.0,
                metric_ts=NOW,
            ),
        ),
        2,
    ),
    EvalCase(
        "no metrics for any pod -> error, no scaling", (ready("a", None), ready("b", None)), None
    ),
    EvalCase("all pods unready -> error, no scaling", (starting("a"), starting("b")), None),
    EvalCase(
        "missing CPU request -> error, no scaling",
        (ready("a", 0.9), replace(ready("b", 0.9), cpu_request_cores=None)),
        None,
    ),
]


@pytest.mark.parametrize("case", EVAL_CASES, ids=[c.name for c in EVAL_CASES])
def test_metric_evaluation(case: EvalCase) -> None:
    current = CurrentState(case.current or len(case.pods), None, None)
    w = window(n=1, pods=case.pods, replicas=current.replicas)
    cfg = ScalerConfig(max_replicas=100, target_cpu_utilization=case.target)
    ev = hpa.evaluate(w, current, cfg, P)
    assert ev.replicas == case.expected, ev.reason


def test_missing_target_above_100_uses_target() -> None:
    # 3 x 30 % of target 150 %: ratio 0.2; missing pod counted as 150 % of its request:
    # (900 + 1500) / 4000 = 60 % -> 0.4 -> ceil(1.6) = 2; with 100 % it would be 47 % -> 2 too,
    # so check the utilisation the controller reports instead.
    pods = (*(ready(f"p{i}", 0.3) for i in range(3)), ready("m", None))
    cfg = ScalerConfig(max_replicas=100, target_cpu_utilization=1.5)
    ev = hpa.evaluate(window(n=1, pods=pods, replicas=4), CurrentState(4), cfg, P)
    assert ev.utilization_pct == 60
    cfg100 = ScalerConfig(max_replicas=100, target_cpu_utilization=0.75)
    ev100 = hpa.evaluate(window(n=1, pods=pods, replicas=4), CurrentState(4), cfg100, P)
    assert ev100.utilization_pct == 47


# ------------------------------------------------------------------ normalisation


@dataclass(frozen=True)
class NormCase:
    name: str
    desired: int
    current: int
    expected: int
    recommendations: tuple[tuple[float, int], ...] = ()
    up_events: tuple[tuple[float, int], ...] = ()
    down_events: tuple[tuple[float, int], ...] = ()
    min_replicas: int = 1
    max_replicas: int = 100
    params: Params = P


def _p(**kw: object) -> Params:
    return replace(P, **kw)  # type: ignore[arg-type]


NORM_CASES = [
    NormCase(
        "scale-down stabilised by a recommendation 299 s ago",
        3,
        8,
        6,
        recommendations=((NOW - 299, 6),),
    ),
    NormCase(
        "a recommendation exactly 300 s ago is outside the window",
        3,
        8,
        3,
        recommendations=((NOW - 300, 6),),
    ),
    NormCase(
        "a recommendation 301 s ago is outside the window",
        3,
        8,
        3,
        recommendations=((NOW - 301, 6),),
    ),
    NormCase(
        "stabilisation takes the max over the window",
        2,
        8,
        7,
        recommendations=((NOW - 200, 5), (NOW - 100, 7), (NOW - 15, 4)),
    ),
    NormCase(
        "stabilisation never raises above current", 2, 5, 5, recommendations=((NOW - 100, 9),)
    ),
    NormCase("scale-up is not stabilised (window 0 s)", 6, 4, 6, recommendations=((NOW - 10, 2),)),
    NormCase("scale-up limit: max(+4 pods, +100 %) from 2 -> 6", 20, 2, 6),
    NormCase("scale-up limit: max(+4 pods, +100 %) from 10 -> 20", 25, 10, 20),
    NormCase("scale-up within the limit is not limited", 13, 10, 13),
    NormCase(
        "scale-up limit counts events of the last 15 s (2 -> 6 10 s ago: no more)",
        12,
        6,
        6,
        up_events=((NOW - 10, 4),),
    ),
    NormCase(
        "an event exactly 15 s ago no longer counts: 6 -> 12", 12, 6, 12, up_events=((NOW - 15, 4),)
    ),
    NormCase("scale-up limited by max replicas", 50, 8, 10, max_replicas=10),
    NormCase(
        "scale-down 100 % per 15 s: 10 -> 1 in one step (bounded by min 1)",
        1,
        10,
        1,
        params=_p(scale_down=replace(hpa.DEFAULT_SCALE_DOWN, stabilization_window_seconds=0)),
    ),
    NormCase(
        "scale-down bounded by min replicas",
        1,
        10,
        3,
        min_replicas=3,
        params=_p(scale_down=replace(hpa.DEFAULT_SCALE_DOWN, stabilization_window_seconds=0)),
    ),
    NormCase(
        "custom scale-down 1 pod per 60 s: 5 -> 4",
        1,
        5,
        4,
        params=_p(scale_down=ScalingRules(0, (ScalingPolicy("Pods", 1, 60),))),
    ),
    NormCase(
        "custom scale-down 1 pod per 60 s, one removed 30 s ago: no more",
        1,
        5,
        5,
        down_events=((NOW - 30, 1),),
        params=_p(scale_down=ScalingRules(0, (ScalingPolicy("Pods", 1, 60),))),
    ),
    NormCase(
        "selectPolicy Min on scale-up: min(+4, +100 %) from 10 -> 14",
        30,
        10,
        14,
        params=_p(scale_up=replace(hpa.DEFAULT_SCALE_UP, select_policy="Min")),
    ),
    NormCase(
        "selectPolicy Disabled on scale-up: no scale-up",
        30,
        10,
        10,
        params=_p(scale_up=replace(hpa.DEFAULT_SCALE_UP, select_policy="Disabled")),
    ),
    NormCase(
        "percent scale-up rounds up: 3 x 1.5 = 4.5 -> 5 (Percent 50 only)",
        9,
        3,
        5,
        params=_p(scale_up=ScalingRules(0, (ScalingPolicy("Percent", 50, 15),))),
    ),
    NormCase(
        "percent scale-down rounds down: 5 x 0.5 = 2.5 -> 2 (Percent 50 only)",
        1,
        5,
        2,
        params=_p(scale_down=ScalingRules(0, (ScalingPolicy("Percent", 50, 15),))),
    ),
]


@pytest.mark.parametrize("case", NORM_CASES, ids=[c.name for c in NORM_CASES])
def test_normalization(case: NormCase) -> None:
    cfg = ScalerConfig(min_replicas=case.min_replicas, max_replicas=case.max_replicas)
    state = State(True, case.recommendations, case.up_events, case.down_events)
    got, _, new_state = hpa.normalize(case.desired, case.current, cfg, state, NOW, case.params)
    assert got == case.expected
    # the unstabilised recommendation is recorded
    assert new_state.recommendations[-1] == (NOW, case.desired)


# ------------------------------------------------------------------ decisions over time


def _decide(
    util: float, replicas: int, now: float, state: State | None, cfg: ScalerConfig, ready_n=None
):
    w = window(
        n=1,
        now=now,
        replicas=replicas,
        ready_replicas=replicas if ready_n is None else ready_n,
        cpu_usage_cores=util * (replicas if ready_n is None else ready_n),
        cpu_request_cores=1.0,
    )
    return hpa.decide(w, CurrentState(replicas, 1.0, 2.0), cfg, state)


def test_fresh_hpa_does_not_scale_in_during_its_first_window() -> None:
    cfg = ScalerConfig(min_replicas=1, max_replicas=20)
    state = None
    reps = 8
    history = []
    for k in range(0, 25):  # 15 s sync for 6 minutes at 30 % CPU (desired 4)
        rec, state = _decide(0.3, reps, NOW + 15 * k, state, cfg)
        reps = rec.recommended.replicas
        history.append(reps)
    # the window seeded with 8 at t=0 holds 8 while that seed is strictly inside the 300 s window
    assert history[:20] == [8] * 20  # t = 0 .. 285 s
    assert history[20:] == [4] * 5  # t = 300 s: the seed is at the cutoff, no longer inside


def test_scale_down_waits_for_the_window_max_to_expire() -> None:
    cfg = ScalerConfig(max_replicas=20)
    # at t=0 the HPA wanted 10 (current 10, 75 %); then load drops to 30 % (desired 4)
    rec, st = _decide(0.75, 10, NOW, None, cfg)
    assert rec.recommended.replicas == 10
    reps = []
    for k in range(1, 23):
        rec, st = _decide(0.30, 10, NOW + 15 * k, st, cfg)
        reps.append((15 * k, rec.recommended.replicas))
    assert all(r == 10 for t, r in reps if t < 300)
    assert all(r == 4 for t, r in reps if t >= 300)


def test_unready_from_totals_on_scale_up() -> None:
    # 4 replicas, 2 ready at 120 % (ratio 1.6), 2 starting: recomputed 60 % -> flips -> keep 4
    cfg = ScalerConfig(max_replicas=20)
    rec, _ = _decide(1.2, 4, NOW, None, cfg, ready_n=2)
    assert rec.recommended.replicas == 4 and rec.action == "none"
    # 4 replicas, 3 ready at 150 %: 4500/4000 = 112 % -> 6
    rec, _ = _decide(1.5, 4, NOW, None, cfg, ready_n=3)
    assert rec.recommended.replicas == 6 and rec.action == "scale_out"


@pytest.mark.parametrize(
    ("current", "min_r", "max_r", "expected", "action"),
    [
        (12, 1, 10, 10, "scale_in"),  # above max: set to max, metrics not consulted
        (1, 3, 10, 3, "scale_out"),  # below min: set to min
        (0, 1, 10, 0, "none"),  # 0 replicas with min > 0: autoscaling disabled
    ],
)
def test_current_outside_bounds(current: int, min_r: int, max_r: int, expected: int, action: str):
    cfg = ScalerConfig(min_replicas=min_r, max_replicas=max_r)
    rec, _ = _decide(0.75, current, NOW, None, cfg)
    assert rec.recommended.replicas == expected
    assert rec.action == action


def test_reason_carries_the_numbers() -> None:
    cfg = ScalerConfig(max_replicas=20)
    rec, _ = _decide(0.9, 3, NOW, None, cfg)
    assert "90%" in rec.reason and "75%" in rec.reason and "3 -> 4" in rec.reason
