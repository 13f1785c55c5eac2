"""showar's short-window estimators read Python lists since stop 49 (numpy's per-call cost was
most of a decision's). A decision must not change with that: each estimator against its numpy
form as of 7afff39 (kept here as the oracle), bit for bit (`repr` tells -0.0 from 0.0), on
windows with NaN, ±inf, signed zeros, missing series, replica counts of 0 or less, and parts
made by `SignalWindow.since`."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.scaler.model import SERIES_FIELDS, SignalWindow, WorkloadRef
from runqscale.scaler.policies import showar_sizing as sizing
from runqscale.scaler.policies.showar_sizing import CFS_PERIOD_SECONDS, Demand, SizingParams, Waits

P = SizingParams()
_sum, _max = np.add.reduce, np.maximum.reduce

# ---- the oracle: stop 48's numpy code (7afff39), unchanged but for names


def _per_replica(w: SignalWindow, name: str) -> np.ndarray:
    return w.get(name) / w.replicas_divisor


def _recent_throttled_ratio(w: SignalWindow) -> float | None:
    thr = w.get("throttled_ratio")
    thr = thr[np.isfinite(thr)]
    return float(_max(thr[-3:])) if thr.size else None


def _saturated(w: SignalWindow, limit: float | None, p: SizingParams) -> bool:
    if not limit:
        return False
    tail = slice(-3, None)
    per = w.get("cpu_usage_cores")[tail] / w.replicas_divisor[tail]
    thr, rate = w.get("throttled_ratio")[tail], w.get("request_rate")[tail]
    loaded = np.isfinite(per) & np.isfinite(thr) & np.isfinite(rate) & (rate > 0)
    if not loaded.any():
        return False
    last = int(np.flatnonzero(loaded)[-1])
    return bool(per[last] >= p.pinned_share * limit
                and (thr[loaded] >= p.throttled_threshold).all())


def _saturated_growth(w: SignalWindow, limit: float, p: SizingParams) -> float:
    thr = w.get("throttled_ratio")[-3:]
    share = float(np.nanmax(thr)) if np.isfinite(thr).any() else 1.0
    return limit * (1.0 + (p.throttle_growth - 1.0) * min(1.0, share))


def _demand(window: SignalWindow, limit: float | None, cpr: float | None,
            p: SizingParams) -> Demand | None:
    w = window.since(window.now - p.demand_window_seconds)
    per = _per_replica(w, "cpu_usage_cores")
    per = per[np.isfinite(per)]
    if per.size == 0:
        return None
    usage = float(_sum(per)) / per.size
    dev = per - usage
    seen_sigma = math.sqrt(float(_sum(dev * dev)) / per.size)
    recent = _per_replica(w.since(w.now - p.rate_window_seconds), "request_rate")
    recent = recent[np.isfinite(recent)]
    per_req = burst = None
    period = 0.0
    if cpr is not None and recent.size:
        reps = max(float(_sum(recent)) / recent.size, 0.0)
        per_req = cpr * reps
        burst = cpr * math.sqrt(reps)
        period = cpr * math.sqrt(reps / CFS_PERIOD_SECONDS)
    ratio = _recent_throttled_ratio(w)
    throttled = ratio is not None and ratio >= p.throttled_threshold
    sigma = max(0.0 if throttled else seen_sigma, burst or 0.0)
    if not throttled:
        if per_req is not None and per_req > usage:
            return Demand(per_req, usage, sigma, False, "per-request", period)
        return Demand(usage, usage, sigma, False, "usage", period)
    if per_req is not None:
        return Demand(max(per_req, usage), usage, sigma, True, "per-request", period)
    grown = _saturated_growth(w, limit or usage, p)
    return Demand(max(grown, usage), usage, 0.0, True, "limit-growth")


def _throttled_share(w: SignalWindow) -> float | None:
    thr = w.get("throttled_ratio")
    thr = thr[np.isfinite(thr)]
    return float(_sum(thr)) / thr.size if thr.size else None


def _throttle_stall(w: SignalWindow) -> float | None:
    thr = w.get("throttled_ratio")
    per = _per_replica(w, "throttled_seconds_per_second")
    ok = np.isfinite(thr) & np.isfinite(per) & (thr > 0)
    periods = float(_sum(thr[ok])) / CFS_PERIOD_SECONDS
    return float(_sum(per[ok])) / periods if periods > 0 else None


def _wait_per_request(window: SignalWindow, seconds: float) -> Waits:
    w = window.since(window.now - seconds)
    wait, thr = w.get("runq_wait_seconds_per_second"), w.get("throttled_seconds_per_second")
    rate = w.get("request_rate")
    ok = np.isfinite(wait) & np.isfinite(rate) & (rate > 0)
    if not ok.any():
        return Waits(None, None, None)
    total = float(_sum(wait[ok]) / _sum(rate[ok]))
    thr_ok = ok & np.isfinite(thr)
    if not thr_ok.any():
        return Waits(total, None, None)
    wait_t, rate_t = wait[thr_ok], _sum(rate[thr_ok])
    throttled = float(_sum(np.minimum(thr[thr_ok], wait_t)) / rate_t)
    contention = max(0.0, float(_sum(wait_t) / rate_t) - throttled)
    return Waits(total, throttled, contention)


# ---- windows

_VALUE = st.one_of(
    st.floats(min_value=0.0, max_value=50.0),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, 0.1, 0.5]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-5.0, max_value=1e6),
)
_COUNT = st.sampled_from([math.nan, 0.0, -1.0, 1.0, 2.0, 3.0, 8.0, 0.5])
_READ = ("cpu_usage_cores", "request_rate", "throttled_ratio", "runq_wait_seconds_per_second",
         "throttled_seconds_per_second", "replicas", "ready_replicas")


@st.composite
def windows(draw: st.DrawFn) -> SignalWindow:
    """1-24 samples 0.5-15 s apart, each series read here missing (25 %) or drawn; sometimes a
    part of it (`since`), as showar's settled samples are."""
    n = draw(st.integers(1, 24))
    step = draw(st.sampled_from([0.5, 1.0, 3.0, 15.0]))
    ts = 1.7e9 + step * np.arange(n, dtype=np.float64)
    series = {}
    for name in SERIES_FIELDS:
        if name not in _READ or draw(st.integers(0, 3)) == 0:
            continue
        elem = _COUNT if name in ("replicas", "ready_replicas") else _VALUE
        series[name] = np.array(draw(st.lists(elem, min_size=n, max_size=n)), dtype=np.float64)
    w = SignalWindow(WorkloadRef("ns", "wl"), ts, series)
    if draw(st.booleans()):
        w = w.since(float(ts[-1]) - draw(st.sampled_from([0.0, 3.0, 9.0, 30.0])))
    return w


@given(windows(), st.sampled_from([None, 0.0, 0.1, 0.4, 2.0]),
       st.sampled_from([None, 0.0, 1e-4, 0.01, 0.3]), st.sampled_from([0.0, 3.0, 9.0, 100.0]))
@settings(max_examples=600, deadline=None)
def test_each_estimator_reads_as_its_numpy_form_did(w: SignalWindow, limit: float | None,
                                                    cpr: float | None, seconds: float) -> None:
    with np.errstate(all="ignore"):  # the oracle divides by NaN and inf on purpose
        pairs = [
            (sizing.demand(w, limit, cpr, P), _demand(w, limit, cpr, P)),
            (sizing.wait_per_request(w, seconds), _wait_per_request(w, seconds)),
            (sizing.throttle_stall(w), _throttle_stall(w)),
            (sizing.throttled_share(w), _throttled_share(w)),
            (sizing.recent_throttled_ratio(w), _recent_throttled_ratio(w)),
            (sizing.saturated(w, limit, P), _saturated(w, limit, P)),
            (sizing.saturated_growth(w, limit or 0.4, P), _saturated_growth(w, limit or 0.4, P)),
        ]
    for new, old in pairs:
        assert repr(new) == repr(old)
