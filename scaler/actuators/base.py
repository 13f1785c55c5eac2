"""The one actuator contract: `apply(recommendation) -> ApplyResult`.

Every actuator (Kubernetes API, local cgroups) takes a policy's Recommendation (the full desired
state in `rec.recommended`) and reports what it did. It never raises on the target's errors
(API errors, a cgroup write refused): they are in `ApplyResult.error`, so the decision routine
can log them, back off, and keep serving the other workloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from runqscale.scaler.model import CurrentState, Recommendation


@dataclass(frozen=True)
class ApplyResult:
    """What `apply` did. `method`: scale | resize | template | local | none.

    `before`/`after` are the sizes around the change where the actuator knows them;
    `delay_seconds` is the time until the change took effect (local: traffic follows it;
    Kubernetes: the API write), `details` holds actuator-specific measurements.
    """

    applied: bool
    dry_run: bool
    method: str
    detail: str
    error: str | None = None
    attempts: int = 0
    before: CurrentState | None = None
    after: CurrentState | None = None
    delay_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class Actuator(Protocol):
    """Changes one workload's size to a recommendation's `recommended` state."""

    dry_run: bool

    def apply(self, rec: Recommendation) -> ApplyResult: ...  # pragma: no cover - protocol
