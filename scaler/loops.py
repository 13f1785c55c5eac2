"""The `runqscale scaler` loops: replay a signals file, or poll Prometheus. Both only build windows
and hand them to the decision routine (runqscale.scaler.routine), which owns state, timing,
the log and SHOWAR's extras."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runqscale.scaler import prometheus_source, signals
from runqscale.scaler.model import (
    CurrentState,
    Recommendation,
    Sample,
    ScalerConfig,
    SignalWindow,
    WorkloadRef,
)
from runqscale.scaler.policies import Policy
from runqscale.scaler.routine import DecisionRoutine, PolicyError

Warn = Callable[[str], None]


def _current(windows: Sequence[SignalWindow]) -> dict[WorkloadRef, CurrentState]:
    return {w.workload: CurrentState.from_window(w) for w in windows}


def _extras(routine: DecisionRoutine, policy: Policy, config: ScalerConfig,
            windows: Sequence[SignalWindow], now: float, force: bool,
            wall_now: float | None = None) -> list[Recommendation]:
    if policy.name != "showar":  # affinity and spread are SHOWAR's
        return []
    return routine.extras(windows, _current(windows), config, now, force, wall_now)


def replay_file(samples: list[Sample], routine: DecisionRoutine, policy: Policy,
                config: ScalerConfig, window_seconds: float, once: bool) -> int:
    """Decide over a recorded signals file in its own time: the samples' timestamps are the
    clock (`--once`: one decision per workload on its last sample). Returns the decisions."""
    full = signals.windows_from_samples(samples)
    if once:
        wins = [signals.window_at(w, w.now, window_seconds) for w in full.values()]
        windows = [w for w in wins if w is not None]
        n = 0
        for w in windows:
            n += routine.decide(w, CurrentState.from_window(w), policy, config, w.now) is not None
        now = max(w.now for w in windows)
        return n + len(_extras(routine, policy, config, windows, now, force=True))
    n = 0
    for t in sorted({float(t) for w in full.values() for t in w.ts}):
        current_windows = []
        for w in full.values():
            win = signals.window_at(w, t, window_seconds)
            if win is None or win.now != t:
                continue
            current_windows.append(win)
            if routine.due(w.workload, policy, config, t):
                n += routine.decide(win, CurrentState.from_window(win), policy, config, t) \
                    is not None
        n += len(_extras(routine, policy, config, current_windows, t, force=False))
    return n


@dataclass
class PrometheusLoop:
    """`scaler --prometheus`: one decision round per period. Prometheus unreachable or a
    workload's newest sample older than `max_signal_age` -> a one-line warning and no decision,
    never an exit (except with --once); wall-clock jumps go through the routine's guard."""

    source: prometheus_source.PrometheusSource
    routine: DecisionRoutine
    policy: Policy
    config: ScalerConfig
    workloads: Sequence[WorkloadRef]
    max_signal_age: float
    window_seconds: float
    warn: Warn = lambda _m: None  # noqa: E731 - a default that says nothing

    @property
    def period(self) -> float:
        return self.config.period_seconds or self.policy.period_seconds

    def round(self, now: float, mono: float) -> list[Recommendation]:
        """Decide once at wall time `now`; PrometheusError when Prometheus cannot answer."""
        note = self.routine.observe_clock(now, mono)
        if note:
            self.warn(note)
        step = max(1.0, min(self.period, 15.0))
        fetched = self.source.fetch(now, self.window_seconds, step)
        ages = self.source.signal_ages(now)
        for w in fetched.warnings[:20]:
            self.warn(w)
        wins = [
            w for w in signals.windows_from_samples(fetched.samples).values()
            if not self.workloads or w.workload in self.workloads
        ]
        if not wins:
            self.warn(f"no workload signals in {self.source.url} over the last "
                      f"{self.window_seconds:g} s: no decision")
        fresh = []
        guard = self.routine.guard
        for w in wins:
            age = ages.get(w.workload)
            if age is not None and age > self.max_signal_age:
                self.warn(f"{w.workload.key}: newest run-queue sample {age:.0f} s old "
                          f"(--max-signal-age {self.max_signal_age:g} s): no decision")
            elif guard.policy_window(w) is None:
                self.warn(f"{w.workload.key}: only samples from before the clock jump: "
                          "no decision")
            else:
                fresh.append(w)
        out = []
        for w in fresh:
            if self.routine.due(w.workload, self.policy, self.config, mono, wall=now):
                try:
                    d = self.routine.decide(w, CurrentState.from_window(w), self.policy,
                                            self.config, mono)
                except PolicyError as exc:  # a policy's bug on one window: the rest go on
                    self.warn(f"{w.workload.key}: {exc}")
                    continue
                if d is not None:
                    out.append(d.rec)
        in_policy_time = [pw for pw in map(guard.policy_window, fresh) if pw is not None]
        extras = _extras(self.routine, self.policy, self.config, in_policy_time,
                         max((w.now for w in in_policy_time), default=now), force=False,
                         wall_now=max((w.now for w in fresh), default=now))
        return out + extras

    def run(self, once: bool, iterations: int | None,
            on_error: Callable[[prometheus_source.PrometheusError], None]) -> int:
        done = total = 0
        while True:
            started = time.monotonic()
            try:
                total += len(self.round(time.time(), started))
            except prometheus_source.PrometheusError as exc:
                if once:
                    raise
                on_error(exc)
            done += 1
            if once or (iterations is not None and done >= iterations):
                return total
            # monotonic: a wall-clock step must not stretch or skip the sleep
            time.sleep(max(0.0, self.period - (time.monotonic() - started)))
