"""A policy that raises on one workload's window costs that workload one decision, not the
loop: `runqscale scaler --prometheus` warns in one line and decides the others (the controller's
side runs against the real API server in test_k8s_controller.py); an actuator or log failure is
not a policy failure and is not reported as one."""

from __future__ import annotations

import pytest

from runqscale.scaler.loops import PrometheusLoop
from runqscale.scaler.model import Sample, ScalerConfig, WorkloadRef
from runqscale.scaler.policies import get
from runqscale.scaler.prometheus_source import Fetched
from runqscale.scaler.routine import DecisionRoutine

SOUND, FAULTY = WorkloadRef("shop", "sound"), WorkloadRef("shop", "faulty")
T0 = 1_750_000_000.0


class Store:
    url = "http://prometheus.test"

    def fetch(self, now: float, window_seconds: float, step_seconds: float) -> Fetched:
        return Fetched([Sample(now - k, wl, 1, 1, 0.4, 0.5, 1.0, 0.001, 0.0)
                        for k in range(10, -1, -1) for wl in (FAULTY, SOUND)])

    def signal_ages(self, now: float) -> dict[WorkloadRef, float]:
        return {SOUND: 0.0, FAULTY: 0.0}


def test_a_policy_that_raises_on_one_workload_warns_and_decides_the_others() -> None:
    static = get("static")

    def fragile(window, current, config, state):
        if window.workload == FAULTY:
            raise ZeroDivisionError("float division by zero")
        return static.decide(window, current, config, state)

    policy = type(static)("fragile", fragile, 1.0, "raises on one workload")
    warnings: list[str] = []
    loop = PrometheusLoop(Store(), DecisionRoutine(), policy,  # type: ignore[arg-type]
                          ScalerConfig(min_replicas=2, max_replicas=4), (), 60.0, 60.0,
                          warnings.append)
    recs = loop.round(T0, 0.0)
    assert [r.workload for r in recs] == [SOUND]
    assert recs[0].recommended.replicas == 2
    (msg,) = warnings
    assert msg.startswith("shop/faulty: policy fragile failed (ZeroDivisionError: float "
                          "division by zero): no decision this step")


def test_only_the_policys_own_failure_is_a_policy_error() -> None:
    class Refusing:
        dry_run = False

        def apply(self, rec):
            raise ValueError("replicas must be >= 0")

    loop = PrometheusLoop(Store(), DecisionRoutine(actuator=Refusing()),  # type: ignore[arg-type]
                          get("static"), ScalerConfig(min_replicas=2, max_replicas=4), (), 60.0,
                          60.0, lambda _m: None)
    with pytest.raises(ValueError, match="replicas must be"):
        loop.round(T0, 0.0)
