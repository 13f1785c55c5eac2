"""What the validation loops hand the decision routine (runqscale.scaler.routine): the policy
(static with its fixed size as a partial) and the actuator contract over the local actuator.

`LocalApply` routes each workload's recommendation to its own local actuator (the one actuator
contract, `apply(rec) -> ApplyResult`) and keeps every actuation for details.json.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping

from runqscale.scaler import policies
from runqscale.scaler.actuators.base import ApplyResult
from runqscale.scaler.actuators.local import LocalActuator
from runqscale.scaler.model import CurrentState, Recommendation
from runqscale.scaler.policies import Policy, showar, showar_sizing, static


def policy_for(name: str, static_state: CurrentState | None = None,
               showar_margin: float | None = None,
               showar_replica_max: float | None = None,
               showar_floor: float | None = None) -> Policy:
    """The named policy; `static` holds `static_state`, showar sizes with `showar_margin`
    sigmas, replicas of at most `showar_replica_max` cores and limits of at least
    `showar_floor` (None: the library's), each as a partial of its params."""
    pol = policies.get(name)
    lib = showar_sizing.SizingParams()
    k = lib.sigma_k if showar_margin is None else showar_margin
    floor = lib.min_cores if showar_floor is None else showar_floor
    if name == "showar" and (k != lib.sigma_k or showar_replica_max is not None
                             or floor != lib.min_cores):
        params = showar.Params(max_replica_cores=showar_replica_max,
                               sizing=showar_sizing.SizingParams(sigma_k=k, min_cores=floor))
        return Policy(pol.name, functools.partial(showar.decide, params=params),
                      pol.period_seconds, pol.summary)
    if name == "static" and static_state is not None:
        params = static.Params(replicas=static_state.replicas,
                               cpu_request_cores=static_state.cpu_request_cores,
                               cpu_limit_cores=static_state.cpu_limit_cores)
        return Policy(pol.name, functools.partial(static.decide, params=params),
                      pol.period_seconds, pol.summary)
    return pol


class LocalApply:
    """The actuator contract over one local actuator per workload name."""

    dry_run = False

    def __init__(self, actuators: Mapping[str, LocalActuator],
                 clock: Callable[[], float] = time.time) -> None:
        self.actuators = actuators
        self.t0 = 0.0  # actuation times in `actuations` are relative to this (unix seconds)
        self.actuations: list[dict] = []
        self.applied = 0
        self._clock = clock
        self._lock = threading.Lock()

    def apply(self, rec: Recommendation) -> ApplyResult:
        act = self.actuators[rec.workload.name]
        t = self._clock() - self.t0
        r = act.apply(rec)
        with self._lock:
            self.applied += r.applied
            self.actuations.append({
                "t": t, "service": rec.workload.name, "action": rec.action,
                "delay_seconds": r.delay_seconds, "detail": r.details, "error": r.error,
                "before": r.before.to_json() if r.before else None,
                "after": r.after.to_json() if r.after else None})
        return r
