"""showar's start-up delay (beyond SHOWAR): from "replicas > ready" to "ready = replicas",
measured from the signals and smoothed exponentially, so pending replicas count as capacity
arriving for about as long as replicas really take to start."""

from __future__ import annotations

from dataclasses import dataclass

from runqscale.scaler.model import SignalWindow


@dataclass(frozen=True)
class Tracking:
    pending_since: float | None = None  # when replicas > ready was first seen
    delay_seconds: float | None = None  # the smoothed start-up delay measured so far
    samples: int = 0  # how many start-ups it has seen


def advance(t: Tracking, window: SignalWindow, smoothing: float) -> Tracking:
    """The tracking after the window's newest sample. Only the newest: its replicas and ready
    replicas may come from the API object, which older samples of the window do not carry."""
    reps, ready = window.last("replicas"), window.last("ready_replicas")
    if reps is None or ready is None:
        return t
    if reps > ready:
        return t if t.pending_since is not None else Tracking(window.now, t.delay_seconds,
                                                              t.samples)
    if t.pending_since is None:
        return t
    observed = window.now - t.pending_since
    delay = observed if t.delay_seconds is None else \
        (1 - smoothing) * t.delay_seconds + smoothing * observed
    return Tracking(None, delay, t.samples + 1)
