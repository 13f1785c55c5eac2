"""How much of a replayed load is a trend a policy can follow, and how much is step-to-step noise.

The replay maps a segment's p01..p99 step rates onto trough..peak × capacity with an affine map
(runqscale.validation.capacity.plan_load). On a segment whose own rate hardly moves, the map's
negative offset multiplies the trace's relative swings, and what it stretches is mostly the
minute-to-minute jitter of the trace's counts (on day 25's busiest hour 7.9 % of the mean,
4.4× a Poisson count's), not a trend: on WC98 day 25 (1998-05-20, before the
tournament) 43–89 % of the replayed load's variance is second-to-second noise, against 1–4 % on
the per-second 1998-06-25 match-day trace. That noise is barely predictable from the second
before it (lag-1 autocorrelation 0.21–0.30 on day 25's segments), so on such a segment a
comparison measures how policies over-provision, not how they follow a load. `report.json`
carries these figures in `load.shape`, so every reading says which kind of load it was.
"""

from __future__ import annotations

import numpy as np

TREND_STEPS = 11  # the trend: a centred moving average over 11 steps (11 trace minutes at 60×)


def trend(rates: np.ndarray, steps: int = TREND_STEPS) -> np.ndarray:
    """Centred moving average over `steps` (odd) steps; the ends average what exists."""
    x = np.asarray(rates, dtype=float)
    if x.size == 0:
        return x
    half = steps // 2
    csum = np.concatenate(([0.0], np.cumsum(x)))
    i = np.arange(x.size)
    lo = np.maximum(0, i - half)
    hi = np.minimum(x.size, i + half + 1)
    return (csum[hi] - csum[lo]) / (hi - lo)


def load_shape(trace_rates: np.ndarray, offset_rps: float, scale: float, capacity_rps: float,
               steps: int = TREND_STEPS) -> dict:
    """The shape of `offset + scale × trace_rates` (requests/s per real second) against capacity.

    - `swing_gain`: how many times the map multiplies the trace's relative swings (1 for a pure
      scale; 3.8 means a 2 % wiggle of the trace arrives as 7.6 %);
    - `noise_share`: var(noise) / (var(noise) + var(trend)), noise being the rate minus its
      trend (0: all trend, 1: all noise; the two parts' variances need not add up exactly);
    - `trend_range_capacity`: how far the trend moves, as a share of capacity;
    - `median_step_capacity`: the median change from one step to the next, same unit.
    """
    base = np.asarray(trace_rates, dtype=float)
    if base.size == 0 or not capacity_rps > 0:
        raise ValueError("load_shape needs rates and a capacity > 0")
    mapped = np.maximum(0.0, offset_rps + scale * base)
    smooth = trend(mapped, steps)
    noise = float((mapped - smooth).var())
    mean = float(mapped.mean())
    return {
        "swing_gain": float(scale * base.mean() / mean) if mean > 0 else None,
        "noise_share": noise / (noise + float(smooth.var())) if noise > 0 else 0.0,
        "trend_range_capacity": float((smooth.max() - smooth.min()) / capacity_rps),
        "median_step_capacity": float(np.median(np.abs(np.diff(mapped))) / capacity_rps)
        if mapped.size > 1 else 0.0,
        "trend_steps": steps,
    }


def describe(shape: dict) -> str:
    """One line for the run's log."""
    gain = shape["swing_gain"]
    text = (f"load shape: {shape['noise_share']:.0%} of the replayed rate's variance is "
            f"step-to-step noise around its trend ({shape['trend_steps']}-step moving average), "
            f"which spans "
            f"{shape['trend_range_capacity']:.2f} x capacity, a median step moves "
            f"{shape['median_step_capacity']:.2f} x capacity")
    if gain is not None:
        text += f"; the map multiplies the trace's relative swings {gain:.1f}x"
    if shape["noise_share"] > 0.5:
        text += " (mostly noise, which the seconds before it hardly predict)"
    return text


def main(argv: list[str] | None = None) -> int:
    """`python -m runqscale.validation.load_shape TRACE DURATION_S [START_S LENGTH_S]`: the
    shape of the segment `runqscale validate` would replay (its default: the busiest window
    DURATION_S covers at 60×), as JSON, without running anything."""
    import argparse
    import json

    from runqscale.validation import capacity, traces

    ap = argparse.ArgumentParser(prog="python -m runqscale.validation.load_shape",
                                 description=main.__doc__.split("\n")[0] if main.__doc__ else "")
    ap.add_argument("trace")
    ap.add_argument("duration_s", type=float)
    ap.add_argument("start_s", type=float, nargs="?")
    ap.add_argument("length_s", type=float, nargs="?")
    a = ap.parse_args(argv)
    trace = traces.load_trace(a.trace)
    seg = traces.window_segment(trace, a.duration_s, a.start_s, a.length_s)
    base = traces.real_rates(trace, seg)
    plan = capacity.plan_load(base, 100.0)  # shares do not depend on the capacity
    shape = load_shape(base, plan.offset_rps, plan.scale, 100.0)
    print(json.dumps({"start_s": seg.start_s, "trace_seconds": seg.trace_seconds,
                      "time_warp": seg.time_warp, **shape}))
    print(describe(shape))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
