"""The scaler's decision counters start every action of a workload at 0 at its first decision:
Prometheus' increase() cannot count a counter's first sample, so an action whose series were born
at 1 would never reach the dashboard's decisions panel or annotations."""

from __future__ import annotations

from runqscale.scaler.model import ACTIONS, CurrentState, Recommendation, WorkloadRef
from runqscale.scaler.selfmetrics import ScalerMetrics


def _rec(action: str, replicas: int) -> Recommendation:
    return Recommendation(
        ts=1.0, workload=WorkloadRef("shop", "web"), policy="showar", signals={},
        current=CurrentState(2, 0.5, 1.0), recommended=CurrentState(replicas, 0.5, 1.0),
        action=action, reason="test")


def _value(m: ScalerMetrics, action: str) -> float | None:
    return m.registry.get_sample_value(
        "runqscale_scaler_decisions_total",
        {"namespace": "shop", "workload": "web", "policy": "showar", "action": action})


def test_first_decision_creates_every_action_at_zero() -> None:
    m = ScalerMetrics()
    assert _value(m, "scale_in") is None  # nothing before the workload's first decision
    m.decided(_rec("scale_out", 3), None)
    assert _value(m, "scale_out") == 1.0
    assert {a: _value(m, a) for a in ACTIONS if a != "scale_out"} == \
        {a: 0.0 for a in ACTIONS if a != "scale_out"}
    m.decided(_rec("scale_in", 1), None)
    assert _value(m, "scale_in") == 1.0 and _value(m, "scale_out") == 1.0
