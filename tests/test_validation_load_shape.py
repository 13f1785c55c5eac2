"""`load.shape` in report.json: how much of a replayed load is trend and how much is noise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.data import WC98_DAY25, WC98_PER_SECOND
from runqscale.validation import capacity as capmod
from runqscale.validation import traces
from runqscale.validation.load_shape import describe, load_shape, trend


def test_trend_is_a_centred_moving_average_that_keeps_a_line() -> None:
    ramp = np.arange(50.0)
    assert np.allclose(trend(ramp, 11)[5:-5], ramp[5:-5])
    assert trend(np.array([3.0, 9.0]), 11).tolist() == [6.0, 6.0]  # the ends average what exists


def test_a_ramp_is_trend_and_an_alternation_is_noise() -> None:
    ramp = np.linspace(10, 70, 90)
    s = load_shape(ramp, 0.0, 1.0, 100.0)
    assert s["noise_share"] < 0.01
    assert s["trend_range_capacity"] == pytest.approx(0.6, abs=0.05)
    assert s["median_step_capacity"] == pytest.approx(60 / 89 / 100)
    assert s["swing_gain"] == pytest.approx(1.0)  # a pure scale keeps relative swings
    flicker = np.tile([20.0, 80.0], 45)
    f = load_shape(flicker, 0.0, 1.0, 100.0)
    assert f["noise_share"] > 0.95 and f["median_step_capacity"] == pytest.approx(0.6)
    assert "mostly noise" in describe(f) and "mostly noise" not in describe(s)


def test_a_negative_offset_multiplies_relative_swings() -> None:
    # trace 45..55 mapped with slope 5 and offset -200: mean 50 -> 50, swings x5
    s = load_shape(np.array([45.0, 55.0] * 10), -200.0, 5.0, 100.0)
    assert s["swing_gain"] == pytest.approx(5.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.1, 1e4), min_size=2, max_size=200), st.floats(0.01, 100))
def test_the_shares_are_bounded_and_do_not_depend_on_the_unit(rates, c) -> None:
    x = np.array(rates)
    a = load_shape(x, 0.0, 1.0, 50.0)
    b = load_shape(x, 0.0, c, 50.0 * c)  # the same load in another unit
    assert 0.0 <= a["noise_share"] <= 1.0
    assert b["noise_share"] == pytest.approx(a["noise_share"], abs=1e-6)
    assert b["trend_range_capacity"] == pytest.approx(a["trend_range_capacity"], rel=1e-6,
                                                      abs=1e-9)


def _default_shape(path: str, duration: float) -> dict:
    tr = traces.load_trace(path)
    seg = traces.window_segment(tr, duration, None, None, None, 60.0)
    base = traces.real_rates(tr, seg)
    plan = capmod.plan_load(base, 55.9, 1.4, 0.3)
    return load_shape(base, plan.offset_rps, plan.scale, 55.9)


def test_day25_busiest_hour_is_mostly_noise_and_the_match_day_is_trend() -> None:
    """What the README says about the benchmark's segments: WC98 day 25 (1998-05-20) barely
    moves, so the map stretches its minute counts' noise; the 1998-06-25 match day has ramps."""
    day25 = _default_shape(str(WC98_DAY25), 60)
    match = _default_shape(str(WC98_PER_SECOND), 90)
    assert day25["noise_share"] > 0.8 and day25["swing_gain"] > 3
    assert day25["trend_range_capacity"] < 0.5
    assert match["noise_share"] < 0.1 and match["trend_range_capacity"] > 0.8


def test_the_command_prints_the_shape_of_the_segment_validate_would_replay() -> None:
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "runqscale.validation.load_shape", str(WC98_DAY25),
                        "60"], capture_output=True, text=True, check=True)
    got = json.loads(r.stdout.splitlines()[0])
    assert got["time_warp"] == 60.0 and got["trace_seconds"] == 3600.0
    assert got["noise_share"] == pytest.approx(_default_shape(str(WC98_DAY25), 60)["noise_share"])
    assert r.stdout.splitlines()[1].startswith("load shape: ")
