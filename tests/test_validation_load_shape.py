"""`load.shape` in report.json: how much of a replayed load is trend and how much is noise."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runqscale.data import WC98_DAY25, WC98_PER_SECOND
from runqscale.validation import traces
from runqscale.validation.capacity import LoadPlan, plan_load
from runqscale.validation.load_shape import describe, load_shape, segment_shape, trend


def _scaled(scale: float = 1.0, offset: float = 0.0, capacity: float = 100.0) -> LoadPlan:
    return LoadPlan(capacity, 1.4, 0.3, scale, offset, 0.0, 1.0)


def test_trend_is_a_centred_moving_average_that_keeps_a_line() -> None:
    ramp = np.arange(50.0)
    assert np.allclose(trend(ramp, 11)[5:-5], ramp[5:-5])
    assert trend(np.array([3.0, 9.0]), 11).tolist() == [6.0, 6.0]  # the ends average what exists
    with pytest.raises(ValueError, match="odd"):
        trend(ramp, 10)


def test_a_ramp_is_trend_and_an_alternation_is_noise() -> None:
    ramp = np.linspace(10, 70, 90)
    s = load_shape(ramp, _scaled())
    assert s["noise_share"] < 0.01
    assert s["trend_range_capacity"] == pytest.approx(0.6, abs=0.05)
    assert s["median_step_capacity"] == pytest.approx(60 / 89 / 100)
    assert s["swing_gain"] == pytest.approx(1.0)  # a pure scale keeps relative swings
    flicker = np.tile([20.0, 80.0], 45)
    f = load_shape(flicker, _scaled())
    assert f["noise_share"] > 0.95 and f["median_step_capacity"] == pytest.approx(0.6)
    assert f["noise_lag1_autocorrelation"] < -0.9  # an alternation: each step predicts the next
    assert "mostly noise" in describe(f) and "mostly noise" not in describe(s)


def test_a_flat_load_has_no_noise() -> None:
    for n in (1, 4, 40):
        s = load_shape(np.full(n, 0.1), _scaled(3.0))
        assert s["noise_share"] == 0.0 and s["trend_range_capacity"] == 0.0
        assert s["noise_lag1_autocorrelation"] is None


def test_a_negative_offset_multiplies_relative_swings() -> None:
    # trace 45..55 mapped with slope 5 and offset -200: mean 50 -> 50, swings x5
    s = load_shape(np.array([45.0, 55.0] * 10), _scaled(5.0, -200.0))
    assert s["swing_gain"] == pytest.approx(5.0)


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        load_shape(np.array([1.0, np.nan]), _scaled())
    with pytest.raises(ValueError, match="finite"):
        load_shape(np.array([]), _scaled())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.1, 1e4), min_size=2, max_size=200), st.floats(0.01, 100))
@example([0.1] * 12, 3.0)
def test_the_shape_does_not_depend_on_the_unit(rates, c) -> None:
    x = np.array(rates)
    a = load_shape(x, _scaled(1.0, 0.0, 50.0))
    b = load_shape(x, _scaled(c, 0.0, 50.0 * c))  # the same load in another unit
    assert b["noise_share"] == pytest.approx(a["noise_share"], abs=1e-6)
    assert b["trend_range_capacity"] == pytest.approx(a["trend_range_capacity"], rel=1e-6,
                                                      abs=1e-9)


def _default_shape(path: str, duration: float) -> dict:
    return dict(segment_shape(traces.load_trace(path), duration)[1])


def test_segment_shape_is_what_validate_replays_at_any_capacity() -> None:
    tr = traces.load_trace(str(WC98_DAY25))
    seg = traces.window_segment(tr, 60)
    base = traces.real_rates(tr, seg)
    replayed = load_shape(base, plan_load(base, 55.9, 1.4, 0.3))  # as compare.plan_replay does
    got = segment_shape(tr, 60)[1]
    assert got.keys() == replayed.keys()
    for key, value in replayed.items():
        assert got[key] == pytest.approx(value), key


def test_day25_busiest_hour_is_mostly_noise_and_the_match_day_is_trend() -> None:
    """What the README says about the benchmark's segments: WC98 day 25 (1998-05-20) barely
    moves, so the map stretches its minute-to-minute jitter; the 1998-06-25 match day ramps."""
    day25 = _default_shape(str(WC98_DAY25), 60)
    match = _default_shape(str(WC98_PER_SECOND), 90)
    assert day25["noise_share"] > 0.8 and day25["swing_gain"] > 3
    assert day25["trend_range_capacity"] < 0.5
    assert match["noise_share"] < 0.1 and match["trend_range_capacity"] > 0.8


def test_the_command_prints_the_shape_of_the_segment_validate_would_replay(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "runqscale.validation.load_shape", str(WC98_DAY25),
                        "60"], capture_output=True, text=True, check=True)
    got = json.loads(r.stdout.splitlines()[0])
    assert got["time_warp"] == 60.0 and got["trace_seconds"] == 3600.0
    assert got["noise_share"] == pytest.approx(_default_shape(str(WC98_DAY25), 60)["noise_share"])
    assert r.stdout.splitlines()[1].startswith("load shape: ")
    bad = subprocess.run([sys.executable, "-m", "runqscale.validation.load_shape",
                          str(tmp_path / "none.csv"), "60"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
