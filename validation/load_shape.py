"""How much of a replayed load is a trend a policy can follow, and how much is step-to-step noise.

The replay maps a segment's p01..p99 step rates onto trough..peak × capacity with an affine map
(runqscale.validation.capacity.plan_load). On a segment whose own rate hardly moves, the map's
negative offset multiplies the trace's relative swings, and what it stretches is mostly the
trace's minute-to-minute jitter, not a trend: on the six WC98 day-25 (1998-05-20, before the
tournament) segments the README's comparison ran, the noise share is 43–89 %, against 1–4 % on
the per-second 1998-06-25 match-day trace, and the noise's lag-1 autocorrelation is 0.19–0.30
(`docs/bench/stop46-load-shape.json`). On such a segment a comparison mostly measures how
policies over-provision, not how they follow a load. `report.json` carries these figures in
`load.shape`, so every reading says which kind of load it was.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from runqscale.validation import traces
from runqscale.validation.capacity import LoadPlan, plan_segment

TREND_STEPS = 11  # the trend: a centred moving average over 11 steps (11 trace minutes at 60×)
SHAPE_CAPACITY = 100.0  # any capacity: the shares and × capacity figures do not depend on it


class LoadShape(TypedDict):
    """`load.shape` in report.json (design contract: fields are only ever added)."""

    swing_gain: float | None  # None when the map clips every step to 0
    noise_share: float
    noise_lag1_autocorrelation: float | None  # None when there is no noise to correlate
    trend_range_capacity: float
    median_step_capacity: float
    trend_steps: int


def trend(rates: np.ndarray, steps: int = TREND_STEPS) -> np.ndarray:
    """Centred moving average over `steps` (odd) steps; the ends average what exists."""
    if steps < 1 or steps % 2 == 0:
        raise ValueError(f"the trend needs an odd number of steps >= 1, not {steps}")
    x = np.asarray(rates, dtype=float)
    if x.size == 0:
        return x
    half = steps // 2
    csum = np.concatenate(([0.0], np.cumsum(x)))
    i = np.arange(x.size)
    lo = np.maximum(0, i - half)
    hi = np.minimum(x.size, i + half + 1)
    return (csum[hi] - csum[lo]) / (hi - lo)


def load_shape(trace_rates: np.ndarray, plan: LoadPlan, steps: int = TREND_STEPS) -> LoadShape:
    """The shape of the replayed rates `plan.apply(trace_rates)` (per real second).

    - `swing_gain`: how many times the map multiplies the trace's relative swings (1 for a pure
      scale; 3.8 means a 2 % wiggle of the trace arrives as 7.6 %); clipping at 0 (a trough of
      0) lowers it;
    - `noise_share`: var(noise) / (var(noise) + var(trend)), noise being the rate minus its
      trend (0: all trend, 1: all noise; the two parts' variances need not add up exactly);
    - `noise_lag1_autocorrelation`: how much one step's noise says about the next's (0: nothing);
    - `trend_range_capacity`: how far the trend moves, as a share of capacity;
    - `median_step_capacity`: the median change from one step to the next, same unit.
    """
    base = np.asarray(trace_rates, dtype=float)
    if base.size == 0 or not np.isfinite(base).all():
        raise ValueError("load_shape needs finite rates")
    mapped = plan.apply(base)
    cap = plan.capacity_rps
    smooth = trend(mapped, steps)
    noise = mapped - smooth
    # a flat load leaves only rounding in both parts: no noise, not an arbitrary ratio
    if float(np.ptp(mapped)) <= 1e-9 * max(float(np.abs(mapped).max()), 1e-300):
        smooth, noise = np.full_like(mapped, mapped.mean()), np.zeros_like(mapped)
    var_noise, var_trend = float(noise.var()), float(smooth.var())
    mean = float(mapped.mean())
    return LoadShape(
        swing_gain=float(plan.scale * base.mean() / mean) if mean > 0 else None,
        noise_share=var_noise / (var_noise + var_trend) if var_noise > 0 else 0.0,
        noise_lag1_autocorrelation=_lag1(noise),
        trend_range_capacity=float((smooth.max() - smooth.min()) / cap),
        median_step_capacity=float(np.median(np.abs(np.diff(mapped))) / cap)
        if mapped.size > 1 else 0.0,
        trend_steps=steps,
    )


def _lag1(x: np.ndarray) -> float | None:
    if x.size < 3 or not x[:-1].std() > 0 or not x[1:].std() > 0:
        return None
    r = float(np.corrcoef(x[:-1], x[1:])[0, 1])
    return r if math.isfinite(r) else None


def describe(shape: LoadShape) -> str:
    """One line for the run's log."""
    text = (f"load shape: noise share {shape['noise_share']:.0%} (step-to-step noise around "
            f"a moving average over {shape['trend_steps']} steps); the trend spans "
            f"{shape['trend_range_capacity']:.2f} x capacity, a median step moves "
            f"{shape['median_step_capacity']:.2f} x capacity")
    if shape["swing_gain"] is not None:
        text += f"; the map multiplies the trace's relative swings {shape['swing_gain']:.1f}x"
    if shape["noise_share"] > 0.5:
        text += " (mostly noise"
        lag1 = shape["noise_lag1_autocorrelation"]
        text += f", lag-1 autocorrelation {lag1:.2f})" if lag1 is not None else ")"
    return text


def segment_shape(trace: traces.Trace, duration_s: float, start_s: float | None = None,
                  length_s: float | None = None) -> tuple[traces.Segment, LoadShape]:
    """(segment, shape) of what `runqscale validate` replays with these options (its default
    trough and peak)."""
    seg, base, plan = plan_segment(trace, duration_s, SHAPE_CAPACITY, start_s=start_s,
                                   length_s=length_s)
    return seg, load_shape(base, plan)


def main(argv: list[str] | None = None) -> int:
    """`python -m runqscale.validation.load_shape TRACE DURATION_S [START_S LENGTH_S]`: the
    shape of the segment `runqscale validate` would replay (its default: the busiest window
    DURATION_S covers at 60×), as JSON, without running anything."""
    import argparse
    import json
    import sys

    prog = "python -m runqscale.validation.load_shape"
    ap = argparse.ArgumentParser(prog=prog, description="The shape of a replayed segment.")
    ap.add_argument("trace")
    ap.add_argument("duration_s", type=float)
    ap.add_argument("start_s", type=float, nargs="?")
    ap.add_argument("length_s", type=float, nargs="?")
    a = ap.parse_args(argv)
    try:
        seg, shape = segment_shape(traces.load_trace(a.trace), a.duration_s, a.start_s,
                                   a.length_s)
    except (OSError, ValueError) as e:  # TraceError is a ValueError
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"start_s": seg.start_s, "trace_seconds": seg.trace_seconds,
                      "time_warp": seg.time_warp, **shape}))
    print(describe(shape))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
