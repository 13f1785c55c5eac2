"""Behind whom did a workload wait for a CPU: its neighbours, or itself?

The two causes need opposite actions. Waits behind other cgroups' threads mean the node is
crowded: more replicas elsewhere, or spreading, help; a bigger limit does not. Waits behind the
workload's own threads (more runnable threads than CPU) or its own quota mean it is too small:
resize it; another replica on the same crowded node would not help each one.

Input: the run-queue wait split by what held the CPU meanwhile (the agent's
`runqscale_runqueue_wait_by_holder_seconds_total`, signal fields `model.HOLDER_FIELDS`) and the CFS
throttled time, all in seconds per second over the same window (what the signals carry).

How the quota is told apart: while its quota throttles a workload, its threads stay runnable
but the CPU runs someone else or idles, so throttled waits are recorded as `idle` or
`other_cgroup`. An idle CPU beside a runnable task is the quota (or a wake-up, which takes
microseconds), so `idle` counts as the workload's own; and the throttled time is taken out of
`other_cgroup` before anything is blamed on the neighbours. Where throttled waits were recorded
as `idle` too, that counts them twice, on purpose: throttled time is counted per CPU run queue,
a lower bound on the wait of several threads queued behind one throttled run queue, and a
workload that hits its own limit should be resized whoever else is on the node. The rule is
monotone: more throttling, own-thread or idle wait never moves the verdict towards the
neighbours, more wait behind other cgroups never towards "own". `kernel` is neither side.

Pure and deterministic (no clock, no I/O): table and property tested in
tests/test_scaler_attribution.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from runqscale.scaler.model import HOLDER_FIELDS, SignalWindow

Cause = Literal["neighbours", "own", "mixed", "insufficient", "unknown"]
HOLDERS: tuple[str, ...] = tuple(HOLDER_FIELDS)  # same_cgroup, other_cgroup, kernel, idle


@dataclass(frozen=True)
class AttributionConfig:
    # A cause is named when its share of the wait reaches this (> 0.5: at most one can).
    threshold: float = 0.6
    # Below this much wait (seconds per second: on average 5 % of one thread waiting) there is
    # too little waiting to act on, and a few waits would decide the split.
    min_wait_seconds_per_second: float = 0.05

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, int | float) and 0.5 < self.threshold <= 1.0):
            raise ValueError(f"attribution threshold must be in (0.5, 1], got "
                             f"{self.threshold!r}: a share above one half, e.g. 0.6")
        m = self.min_wait_seconds_per_second
        if not (isinstance(m, int | float) and math.isfinite(m) and m >= 0):
            raise ValueError(f"attribution min_wait_seconds_per_second must be a finite number "
                             f">= 0, got {m!r}: e.g. 0.05")


DEFAULT = AttributionConfig()


@dataclass(frozen=True)
class Attribution:
    """The verdict and the numbers behind it (shares are of `wait`, each in 0..1)."""

    cause: Cause
    wait: float  # total run-queue wait, seconds per second (0 when unknown)
    neighbours: float  # share behind other cgroups, after the quota's part is taken out
    own_threads: float  # share behind the workload's own threads (same_cgroup)
    own_quota: float  # share explained by its quota (idle, and throttled time behind others)
    other: float  # the rest: kernel threads

    @property
    def own(self) -> float:
        return self.own_threads + self.own_quota

    @property
    def suggests(self) -> Literal["scale_out", "resize"] | None:
        """scale_out (or spread) when neighbours hold the CPU, resize when the workload does."""
        if self.cause == "neighbours":
            return "scale_out"
        return "resize" if self.cause == "own" else None

    @property
    def reason(self) -> str:
        """One clause for a decision's reason, with the numbers."""
        if self.cause == "unknown":
            return "no run-queue wait split by holder (agents without it, e.g. the bcc backend)"
        head = f"run-queue wait {self.wait:.3g} s/s"
        if self.cause == "insufficient":
            return f"{head}: too little to say behind whom"
        return (f"{head}: {self.neighbours:.0%} behind other cgroups, {self.own_threads:.0%} "
                f"behind its own threads, {self.own_quota:.0%} its own quota, "
                f"{self.other:.0%} kernel -> {self.cause}")


def _value(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return max(float(x), 0.0)


def attribute(wait_by_holder: Mapping[str, float | None], throttled_seconds: float | None,
              config: AttributionConfig = DEFAULT) -> Attribution:
    """Whether the wait is mostly behind other cgroups or the workload's own threads/quota.

    `wait_by_holder`: seconds per second of run-queue wait per holder (keys of HOLDERS; a missing
    key, None or NaN is no data). `throttled_seconds`: CFS throttled seconds per second over the
    same window (None: unknown, taken as 0). With no holder data at all the cause is "unknown";
    with less than `min_wait_seconds_per_second` of wait it is "insufficient"; when neither
    side reaches `threshold` it is "mixed".
    """
    unknown_keys = set(wait_by_holder) - set(HOLDERS)
    if unknown_keys:
        raise ValueError(f"wait_by_holder has unknown holder(s) {sorted(unknown_keys)}: use "
                         f"{', '.join(HOLDERS)}")
    held = {h: _value(wait_by_holder.get(h)) for h in HOLDERS}
    if all(v is None for v in held.values()):
        return Attribution("unknown", 0.0, 0.0, 0.0, 0.0, 0.0)
    same, other, kernel, idle = (held[h] or 0.0 for h in HOLDERS)
    total = same + other + kernel + idle
    if total <= 0 or total < config.min_wait_seconds_per_second:
        return Attribution("insufficient", total, 0.0, 0.0, 0.0, 0.0)
    throttled = _value(throttled_seconds) or 0.0
    quota_in_other = min(other, throttled)
    neighbours = (other - quota_in_other) / total
    own_threads = same / total
    own_quota = (idle + quota_in_other) / total
    if neighbours >= config.threshold:
        cause: Cause = "neighbours"
    elif own_threads + own_quota >= config.threshold:
        cause = "own"
    else:
        cause = "mixed"
    return Attribution(cause, total, neighbours, own_threads, own_quota, kernel / total)


def _mean(arr: np.ndarray) -> float | None:
    """Mean of the finite values of a float64 series (a window's), None without any: numpy's
    own sum and division, as `mean` does for float64, without its wrapper (which costs more
    than the sum on a window of a few dozen samples)."""
    ok = arr[np.isfinite(arr)]
    return float(np.add.reduce(ok)) / ok.size if ok.size else None


def attribute_window(window: SignalWindow, config: AttributionConfig = DEFAULT) -> Attribution:
    """`attribute` over a signal window: each field's mean over the samples that have it (the
    window's average rates). Use `window.since(t0)` for a shorter span."""
    split = {h: _mean(window.get(f)) for h, f in HOLDER_FIELDS.items()}
    return attribute(split, _mean(window.get("throttled_seconds_per_second")), config)
