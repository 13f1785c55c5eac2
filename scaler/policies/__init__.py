"""Scaling policies by name: each is `decide(window, current, config, state) -> (rec, state)`.

Policies are pure and deterministic: time comes from the window (`window.now`), state is an
immutable value returned with each decision and passed back in with the next one (None at first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runqscale.scaler.model import CurrentState, Recommendation, ScalerConfig, SignalWindow
from runqscale.scaler.policies import hpa, phpa, showar, static, vpa

Decide = Callable[[SignalWindow, CurrentState, ScalerConfig, Any], tuple[Recommendation, Any]]


@dataclass(frozen=True)
class Policy:
    name: str
    decide: Decide
    period_seconds: float  # how often the control loop calls decide (the policy's own default)
    summary: str


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy(
            "showar",
            showar.decide,
            showar.PERIOD_SECONDS,
            "PID on contention wait per request + demand+kσ vertical, coordinated (SHOWAR)",
        ),
        Policy("hpa", hpa.decide, hpa.PERIOD_SECONDS, "Kubernetes HPA v2 on CPU utilisation"),
        Policy("vpa", vpa.decide, vpa.PERIOD_SECONDS, "Kubernetes VPA recommender + updater rule"),
        Policy(
            "phpa-linear",
            phpa.decide_linear,
            phpa.PERIOD_SECONDS,
            "predictive HPA, linear regression over the last 12 HPA answers",
        ),
        Policy(
            "phpa-knn",
            phpa.decide_knn,
            phpa.PERIOD_SECONDS,
            "predictive HPA, k-nearest neighbours over the last 12 HPA answers",
        ),
        Policy("static", static.decide, static.PERIOD_SECONDS, "fixed replicas and limits"),
    )
}


def get(name: str) -> Policy:
    """The policy called `name`; KeyError lists the known names."""
    try:
        return POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}") from None
