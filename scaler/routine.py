"""The one decision routine (in the spirit of the VPA recommender's `routines/`).

Per workload it owns what every control loop needs and none should keep a copy of:

- the policy's state, carried from one decision to the next (reset when the policy changes);
- when the policy is due: its period on the caller's monotonic clock (a wall-clock step never
  stalls or hurries a loop), and error backoff after a failed apply (period x 2^n, capped);
- the wall-clock guard (runqscale.scaler.clock): policies see windows in policy time;
- the recommendations log (design.md contract, fsync'd) and resuming from it after a crash:
  decisions the log already holds are not logged again, and a live loop does not decide a
  workload again before its period has passed since the last logged decision;
- SHOWAR's affinity and spread (node pressure) recommendations over all showar workloads;
- the scaler's self-metrics (decisions, desired vs current size, errors).

Callers (the `scaler` CLI, the in-cluster controller, the validation loops) only build signal
windows, read the current size, and hand over an actuator (`apply(rec) -> ApplyResult`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runqscale.scaler import affinity, log, spread
from runqscale.scaler.actuators.base import Actuator, ApplyResult
from runqscale.scaler.clock import WallClockGuard
from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    ScalerConfig,
    SignalWindow,
    WorkloadRef,
)
from runqscale.scaler.policies import Policy
from runqscale.scaler.selfmetrics import ScalerMetrics

ACTUATED = ("scale_out", "scale_in", "resize")
AFFINITY_PERIOD_SECONDS = 300.0

ResumeKey = tuple[str, str, bool]  # (policy, workload key, an affinity/spread extra)


class PolicyError(RuntimeError):
    """A policy raised on one workload's window (a bug in it): that workload gets no decision,
    its state is kept as it was, and the caller goes on with the others."""

    def __init__(self, policy: str, workload: WorkloadRef, exc: Exception) -> None:
        super().__init__(f"policy {policy} failed ({type(exc).__name__}: {exc}): no decision "
                         "this step; a runqscale bug: please report it with the signals")
        self.policy, self.workload = policy, workload


class ResumeError(ValueError):
    """The log cannot be resumed from (not the design.md format); the message names the line."""


def _resume_key(rec: Recommendation) -> ResumeKey:
    return rec.policy, rec.workload.key, rec.action == "affinity"


def resume_marks(log_path: str | None) -> dict[ResumeKey, float]:
    """The newest logged ts per (policy, workload, extra): what a killed run already logged.
    A torn last line is not a decision, so it is decided again."""
    if not log_path or not Path(log_path).exists():
        return {}
    try:
        recs = log.read(log_path).recommendations
    except log.LogError as exc:
        raise ResumeError(f"--log {exc}; or give a new --log file") from None
    except OSError as exc:
        raise ResumeError(f"--log {log_path}: cannot read ({exc.strerror})") from None
    marks: dict[ResumeKey, float] = {}
    for r in recs:
        k = _resume_key(r)
        marks[k] = max(r.ts, marks.get(k, r.ts))
    return marks


@dataclass
class _Track:
    policy: str
    state: Any = None
    last: float | None = None  # monotonic time of the last decision
    errors: int = 0  # failed applies in a row
    retry_at: float | None = None  # monotonic: no new attempt before this (backoff)


@dataclass(frozen=True)
class Decision:
    """One workload's decision: the recommendation as logged (dry_run/applied/error filled) and
    what the actuator did (None: nothing was sent to it: no change, or no actuator)."""

    rec: Recommendation
    result: ApplyResult | None = None
    backoff_seconds: float = 0.0


class DecisionRoutine:
    def __init__(
        self,
        actuator: Actuator | None = None,
        log_path: str | None = None,
        resume: bool = True,
        metrics: ScalerMetrics | None = None,
        guard: WallClockGuard | None = None,
        affinity_period_seconds: float = AFFINITY_PERIOD_SECONDS,
        error_backoff_cap_seconds: float = 60.0,
        on_applying: Callable[[Recommendation], None] | None = None,
        on_logged: Callable[[Sequence[Recommendation]], None] | None = None,
    ) -> None:
        self.actuator = actuator
        self.log_path = log_path
        self.metrics = metrics
        self.affinity_period = affinity_period_seconds
        self.backoff_cap = error_backoff_cap_seconds
        # called just before each actuator write: a kill -9 between the write and its log line
        # then still leaves the intent visible
        self.on_applying = on_applying
        self.on_logged = on_logged
        self.marks = resume_marks(log_path) if resume else {}
        self.guard = guard or WallClockGuard()
        self._tracks: dict[WorkloadRef, _Track] = {}
        self._last_extras: float | None = None
        self._lock = threading.Lock()  # tracks and the log are shared by worker threads

    @property
    def dry_run(self) -> bool:
        return self.actuator is None or self.actuator.dry_run

    # ------------------------------------------------------------------ time

    def observe_clock(self, wall: float, mono: float) -> str | None:
        """Once per loop step in live loops: a one-line note when the wall clock jumped."""
        return self.guard.observe(wall, mono)

    def last_decided(self, wl: WorkloadRef) -> float | None:
        track = self._tracks.get(wl)
        return None if track is None else track.last

    def due(self, wl: WorkloadRef, policy: Policy, config: ScalerConfig, mono: float,
            wall: float | None = None) -> bool:
        """The workload's policy period has passed since its last decision (monotonic), and it
        is not backing off after a failed apply. A workload first seen here whose last decision
        is in the resumed log counts that decision (needs `wall`)."""
        period = config.period_seconds or policy.period_seconds
        track = self._track(wl, policy.name)
        if track.last is None and wall is not None:
            mark = self.marks.get((policy.name, wl.key, False))
            if mark is not None and wall - mark < period:
                track.last = mono - (wall - mark)
        if track.retry_at is not None and mono < track.retry_at:
            return False
        return track.last is None or mono - track.last >= period - 1e-6

    def _track(self, wl: WorkloadRef, policy: str) -> _Track:
        with self._lock:
            track = self._tracks.get(wl)
            if track is None or track.policy != policy:
                track = self._tracks[wl] = _Track(policy)
            return track

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        window: SignalWindow,
        current: CurrentState,
        policy: Policy,
        config: ScalerConfig,
        mono: float,
        act: bool = True,
    ) -> Decision | None:
        """Decide one workload on `window` (wall-clock stamped), apply a change through the
        actuator when `act`, log it. None when the guard leaves no sample (clock jumped back)."""
        in_policy_time = self.guard.policy_window(window)
        if in_policy_time is None:
            return None
        track = self._track(window.workload, policy.name)
        try:
            rec, state = policy.decide(in_policy_time, current, config, track.state)
        except Exception as exc:  # only the policy's own failure: apply and log raise as they do
            raise PolicyError(policy.name, window.workload, exc) from exc
        track.state = state
        track.last = mono
        rec = replace(self.guard.wall_rec(rec, window.now), dry_run=self.dry_run, applied=False)
        result, backoff = None, 0.0
        if act and self.actuator is not None and rec.action in ACTUATED \
                and not self._logged_before(rec):
            if self.on_applying is not None:
                self.on_applying(rec)
            result = self.actuator.apply(rec)
            backoff = self._backoff(track, config.period_seconds or policy.period_seconds,
                                    mono, failed=result.error is not None)
            rec = replace(rec, dry_run=result.dry_run, applied=result.applied, error=result.error)
        self._record(rec, result)
        return Decision(rec, result, backoff)

    def _backoff(self, track: _Track, period: float, mono: float, failed: bool) -> float:
        """After a failed apply, wait period x 2^errors (capped) before the next attempt, so a
        409/429 storm is not met with the same burst every step."""
        if not failed:
            track.errors, track.retry_at = 0, None
            return 0.0
        track.errors += 1
        delay = min(self.backoff_cap, period * 2.0 ** track.errors)
        track.retry_at = mono + delay
        return delay

    def extras(self, windows: Sequence[SignalWindow], current: dict[WorkloadRef, CurrentState],
               config: ScalerConfig, now: float, force: bool = False,
               wall_now: float | None = None) -> list[Recommendation]:
        """SHOWAR's affinity pairs and node-pressure spread moves over these (showar) workloads,
        every `affinity_period_seconds` of their (policy) time `now`, or when forced; stamped
        `wall_now` when given, and logged like decisions."""
        if not windows:
            return []
        if not force and self._last_extras is not None \
                and now - self._last_extras < self.affinity_period:
            return []
        self._last_extras = now
        out = affinity.recommendations(windows, current)
        pods = [(w.workload, p) for w in windows for p in w.pods]
        out += spread.recommendations(pods, current, now, config.target_runq_p95_seconds)
        out = [replace(r, dry_run=self.dry_run, applied=False,
                       ts=r.ts if wall_now is None else wall_now) for r in out]
        for r in out:
            self._record(r, None)
        return out

    # ------------------------------------------------------------------ log and metrics

    def _logged_before(self, rec: Recommendation) -> bool:
        return rec.ts <= self.marks.get(_resume_key(rec), -math.inf)

    def _record(self, rec: Recommendation, result: ApplyResult | None) -> None:
        if self.metrics is not None:
            self.metrics.decided(rec, result)
        if self._logged_before(rec):  # resuming: replayed silently up to what the log holds
            return
        with self._lock:
            if self.log_path:
                log.append(self.log_path, [rec])
            if self.on_logged is not None:
                self.on_logged([rec])
