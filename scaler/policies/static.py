"""Static: fixed replicas and CPU request/limit, the control group.

Each fixed value that is set (`Params`) is recommended whatever the signals; a value left None
keeps the workload's current one. Replicas are bounded by [min, max] like every policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    ScalerConfig,
    SignalWindow,
    classify,
)

NAME = "static"
PERIOD_SECONDS = 15.0


@dataclass(frozen=True)
class Params:
    replicas: int | None = None
    cpu_request_cores: float | None = None
    cpu_limit_cores: float | None = None


@dataclass(frozen=True)
class State:
    pass


def initial_state() -> State:
    return State()


def decide(
    window: SignalWindow,
    current: CurrentState,
    config: ScalerConfig,
    state: State | None,
    params: Params = Params(),
) -> tuple[Recommendation, State]:
    replicas = config.clamp_replicas(
        params.replicas if params.replicas is not None else current.replicas
    )
    req = (
        params.cpu_request_cores
        if params.cpu_request_cores is not None
        else (current.cpu_request_cores)
    )
    lim = params.cpu_limit_cores if params.cpu_limit_cores is not None else current.cpu_limit_cores
    recommended = CurrentState(replicas, req, lim)
    action = classify(current, recommended)
    reason = (
        "static: keep the fixed size"
        if action == "none"
        else f"static: set the fixed size {replicas} replicas, request {req}, limit {lim} cores"
    )
    rec = Recommendation.decided(window, NAME, current, recommended, reason, action)
    return rec, state or State()
