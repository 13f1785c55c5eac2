"""Trace parsing (WC98 formats, per-second lists), one-line errors naming file:line, segment
scaling, time-warp and the open-loop schedule."""

from __future__ import annotations

import os

import numpy as np
import pytest

from runqscale.validation.traces import (
    TraceError,
    choose_segment,
    load_trace,
    real_rates,
    schedule,
)

DATA = os.path.join(os.path.dirname(__file__), "data", "worldcup98")


def write(tmp_path, text: str, name: str = "t.csv") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_wc98_per_minute_excerpt() -> None:
    t = load_trace(os.path.join(DATA, "wc_day25_per_minute_excerpt.csv"))
    assert t.step_seconds == 60
    assert t.counts.size == 41
    assert t.counts[0] == 1928 and t.counts[1] == 1672
    assert t.rates[0] == pytest.approx(1928 / 60)
    assert t.label(60).startswith("1998-05-20 08:00")


def test_wc98_per_second_with_header() -> None:
    t = load_trace(os.path.join(DATA, "wc_1998-06-25_per_second_excerpt.csv"))
    assert t.step_seconds == 1
    assert t.counts.size == 20
    assert t.counts[:2].tolist() == [116, 281]


def test_unix_seconds_and_whitespace_list(tmp_path) -> None:
    t = load_trace(write(tmp_path, "100,5\n101,7\n102,0\n"))
    assert t.step_seconds == 1 and t.counts.tolist() == [5, 7, 0]
    w = load_trace(write(tmp_path, "# per second\n1 2 3\n4\n\n5 6\n", "w.txt"))
    assert w.step_seconds == 1 and w.counts.tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("text", "line", "words"), [
    ("1998-05-20 08:00,10\n1998-05-20 08:01,abc\n", 2, "not a number"),
    ("1998-05-20 08:00,10\n1998-05-20 08:01,-4\n", 2, ">= 0"),
    ("1998-05-20 08:00,10\nyesterday,4\n", 2, "timestamp 'yesterday'"),
    ("1998-05-20 08:01,10\n1998-05-20 08:00,4\n", 2, "does not increase"),
    ("1998-05-20 08:00,10\n1998-05-20 08:01,4\n1998-05-20 08:05,4\n1998-05-20 08:06,4\n", 3,
     "gap of 240 s"),
    ("period,count\n1998-05-20 08:00:01,1,2\n", 2, "expected 2 fields"),
    ("1 2 3\n4 x 6\n", 2, "count 'x'"),
    ("1 2 3\n4,5\n", 2, "comma"),
    ("\n\n", 1, "empty trace"),
    ("period,count\n", 1, "a header and no data"),
])
def test_bad_files_name_the_line(tmp_path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TraceError) as e:
        load_trace(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert words in msg
    assert "\n" not in msg


def test_missing_and_binary_files(tmp_path) -> None:
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(str(tmp_path / "nope.csv"))
    p = tmp_path / "bin"
    p.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(TraceError, match="not a text file"):
        load_trace(str(p))


def test_segment_scale_and_warp(tmp_path) -> None:
    # 10 minutes per minute: 60, 120, ..., 600 requests -> 1..10 req/s
    lines = [f"1998-05-20 08:{i:02d},{60 * (i + 1)}" for i in range(10)]
    t = load_trace(write(tmp_path, "\n".join(lines) + "\n"))
    seg = choose_segment(t, duration_s=60, peak_rps=20, peak_quantile=1.0)
    assert seg.time_warp == pytest.approx(10)  # 600 trace seconds in 60 s
    assert seg.scale == pytest.approx(2.0)  # peak 10 req/s -> 20 req/s
    r = real_rates(t, seg)
    assert r.size == 60
    assert r[0] == pytest.approx(2.0) and r[-1] == pytest.approx(20.0)
    # an explicit start and warp: minutes 5.. at 30x for 10 s = 300 trace seconds
    seg2 = choose_segment(t, duration_s=10, peak_rps=10, start_s=300, time_warp=30,
                          peak_quantile=1.0)
    assert seg2.trace_seconds == 300 and seg2.time_warp == 30
    assert real_rates(t, seg2)[0] == pytest.approx(6 / 10 * 10)
    with pytest.raises(ValueError, match="outside the trace"):
        choose_segment(t, 10, 10, start_s=601)


def test_schedule_is_deterministic_and_follows_the_rate() -> None:
    rates = np.array([10.0] * 50 + [100.0] * 50)
    a, b = schedule(rates, seed=3), schedule(rates, seed=3)
    assert np.array_equal(a, b)
    assert np.all(np.diff(a) >= 0)
    first, second = (a < 50).sum(), (a >= 50).sum()
    assert 400 < first < 600 and 4500 < second < 5500
    assert not np.array_equal(a, schedule(rates, seed=4))


def test_default_segment_is_the_busiest_window_at_most_60x() -> None:
    from runqscale.validation.traces import Trace, window_segment

    counts = np.ones(24 * 60)
    counts[600:700] = 50.0  # the busy 100 minutes
    t = Trace("t", counts * 60, 60.0, "0", 0.0)
    seg = window_segment(t, duration_s=100)  # 100 s at <= 60x: 100 trace minutes
    assert seg.time_warp == pytest.approx(60) and seg.trace_seconds == pytest.approx(6000)
    assert seg.start_s == pytest.approx(600 * 60)
    assert seg.scale == 1.0
    # a short trace is replayed whole, slower
    short = Trace("s", np.full(30, 60.0), 60.0, "0", 0.0)
    assert window_segment(short, 100).time_warp == pytest.approx(18)
    # squeezing a day into minutes is refused, naming the way out
    with pytest.raises(ValueError, match="above the maximum 60x"):
        window_segment(t, duration_s=150, start_s=0, length_s=86400)
    with pytest.raises(ValueError, match="outside the trace"):
        window_segment(t, 10, start_s=86400)


def test_per_second_trace_is_averaged_over_each_real_second() -> None:
    from runqscale.validation.traces import Segment, Trace

    t = Trace("p", np.tile([0.0, 10.0], 60), 1.0, "0", 0.0)  # alternating 0/10 req/s
    r = real_rates(t, Segment(0.0, 120.0, 60.0, 1.0, 10.0, 10.0))
    assert r.tolist() == pytest.approx([5.0, 5.0])


def test_load_plan_maps_trough_and_peak_onto_the_capacity() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from runqscale.validation.capacity import capacity_rps, plan_load

    rates = np.linspace(10.0, 110.0, 101)
    p = plan_load(rates, capacity=50.0)
    lo, hi = np.quantile(rates, [0.01, 0.99])
    assert p.apply(np.array([lo, hi])).tolist() == pytest.approx([15.0, 70.0])  # 0.3x, 1.4x
    flat = plan_load(np.full(10, 4.0), capacity=10.0)
    assert flat.apply(np.array([4.0])).tolist() == pytest.approx([14.0]) and flat.offset_rps == 0
    with pytest.raises(ValueError, match="trough"):
        plan_load(rates, 50.0, peak=0.5, trough=0.8)
    assert capacity_rps({"a": 0.01, "b": 0.05}, {"a": 1.0, "b": 1.0}) == pytest.approx(20.0)

    @given(st.lists(st.floats(0, 1e4), min_size=2, max_size=50), st.floats(0.1, 1e3))
    def never_negative_and_ordered(xs: list[float], cap: float) -> None:
        a = np.asarray(xs)
        if np.quantile(a, 0.99) <= 1e-6:  # no requests: a clear error, not a plan
            with pytest.raises(ValueError, match="no requests"):
                plan_load(a, cap)
            return
        q = plan_load(a, cap).apply(np.sort(a))
        assert (q >= 0).all() and (np.diff(q) >= -1e-9).all()

    never_negative_and_ordered()


def _measured(rate: float, seconds: float, cores: dict[str, float]) -> dict:
    """A measure_cpu_per_request result: `rate` answered for `seconds`, `cores` used per key."""
    ok = int(round(rate * seconds))
    return {"seconds": seconds, "ok": ok, "cpu_seconds": {k: c * seconds for k, c in cores.items()},
            "cpu_seconds_per_request": {k: c * seconds / ok for k, c in cores.items()}}


def test_two_rates_separate_idle_cpu_from_cpu_per_request() -> None:
    """DeathStarBench's case: a service burning CPU with no requests looks 2x as costly per
    request at a light rate, which halved the load the benchmark meant to plan."""
    from hypothesis import given
    from hypothesis import strategies as st

    from runqscale.validation.capacity import capacity_rps, fit_cpu_model

    def cores(idle: float, per_req: float, rate: float) -> float:
        return idle + per_req * rate

    light = _measured(10.0, 10.0, {"a": cores(0.004, 0.0004, 10.0), "b": cores(0.0, 1e-4, 10.0)})
    loaded = _measured(130.0, 10.0, {"a": cores(0.004, 0.0004, 130.0),
                                     "b": cores(0.0, 1e-4, 130.0)})
    m = fit_cpu_model(light, loaded)
    assert m.idle_cores == pytest.approx({"a": 0.004, "b": 0.0}, abs=1e-12)
    assert m.cpu_seconds_per_request == pytest.approx({"a": 0.0004, "b": 1e-4})
    rps, key = m.capacity({"a": 0.1, "b": 0.1})
    assert key == "a" and rps == pytest.approx((0.1 - 0.004) / 0.0004)  # 240 req/s
    # the single light rate would have planned for 125 req/s
    assert capacity_rps(light["cpu_seconds_per_request"], {"a": 0.1, "b": 0.1}) == \
        pytest.approx(125.0)

    # a quiet service whose measured use fell with load (noise): its loaded average, no idle
    noisy = fit_cpu_model(_measured(10.0, 10.0, {"q": 0.002}), _measured(100.0, 10.0,
                                                                          {"q": 0.001}))
    assert noisy.idle_cores["q"] == 0 and noisy.cpu_seconds_per_request["q"] == \
        pytest.approx(1e-5)
    # rates too close to fit a line: the loaded average
    close = fit_cpu_model(_measured(10.0, 10.0, {"a": 0.005}), _measured(12.0, 10.0,
                                                                         {"a": 0.0052}))
    assert close.idle_cores["a"] == 0 and close.cpu_seconds_per_request["a"] == \
        pytest.approx(0.0052 / 12.0)
    # idle CPU that fills the whole allocation: a clear error naming the service and the fix
    with pytest.raises(RuntimeError, match="a uses .* raise --replica-cpu"):
        m.capacity({"a": 0.003, "b": 0.1})

    @given(st.floats(0.0, 0.05), st.floats(1e-5, 0.02), st.floats(1.0, 20.0),
           st.floats(2.0, 20.0))
    def recovered_and_never_below_the_single_rate(idle: float, per_req: float, r1: float,
                                                  spread: float) -> None:
        r2 = r1 * spread
        a = fit_cpu_model(_measured(r1, 10.0, {"s": cores(idle, per_req, r1)}),
                          _measured(r2, 10.0, {"s": cores(idle, per_req, r2)}))
        # the rates are whole requests over 10 s: allow their rounding
        assert a.cpu_seconds_per_request["s"] == pytest.approx(per_req, rel=0.1)
        alloc = {"s": idle + per_req * 50.0}
        single = capacity_rps(_measured(r1, 10.0, {"s": cores(idle, per_req, r1)})[
            "cpu_seconds_per_request"], alloc)
        assert a.capacity(alloc)[0] >= single * (1 - 0.1)

    recovered_and_never_below_the_single_rate()
