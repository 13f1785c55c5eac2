"""showar's start-up delay (beyond SHOWAR): from "replicas > ready" to "ready = replicas",
measured from showar's own scale-out decision (or, for a scale-out showar did not make, from
the first decision that saw replicas > ready) and smoothed exponentially, so pending replicas
count as capacity arriving for about as long as replicas really take to start.

The clock starts at the decision, not at the first window that shows pending replicas: pods
that become Ready within one decision period are never seen pending, and a start-up that was
never seen would never be measured."""

from __future__ import annotations

from dataclasses import dataclass

from runqscale.scaler.model import SignalWindow


@dataclass(frozen=True)
class Tracking:
    pending_since: float | None = None  # showar's scale-out, else replicas > ready first seen
    delay_seconds: float | None = None  # the smoothed start-up delay measured so far
    samples: int = 0  # how many start-ups it has seen
    target: int | None = None  # the replica count of showar's own scale-out being timed


def started(t: Tracking, now: float, replicas: int) -> Tracking:
    """showar decided to scale out to `replicas` at `now`: time the start-up from here (an
    earlier start-up still under way keeps its older mark)."""
    since = now if t.pending_since is None else t.pending_since
    return Tracking(since, t.delay_seconds, t.samples, replicas)


def advance(t: Tracking, window: SignalWindow, smoothing: float) -> Tracking:
    """The tracking after the window's newest sample. Only the newest: its replicas and ready
    replicas may come from the API object, which older samples of the window do not carry."""
    reps, ready = window.last("replicas"), window.last("ready_replicas")
    if reps is None or ready is None:
        return t
    if t.target is not None and reps < t.target:
        # the scale-out was never applied (dry run, refused, or undone): nothing is starting
        t = Tracking(None, t.delay_seconds, t.samples)
    if reps > ready:
        return t if t.pending_since is not None else Tracking(window.now, t.delay_seconds,
                                                              t.samples)
    if t.pending_since is None:
        return t
    observed = window.now - t.pending_since
    delay = observed if t.delay_seconds is None else \
        (1 - smoothing) * t.delay_seconds + smoothing * observed
    return Tracking(None, delay, t.samples + 1)
