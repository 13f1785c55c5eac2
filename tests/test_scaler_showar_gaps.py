"""showar on windows with gaps: any sample of any series may be missing (a scrape that failed,
a series the agent cannot give). Whatever is missing, a decision comes back and stays inside the
bounds the user set; a missing last throttled ratio once raised TypeError in the throttled branch
(stop 39, found by a closed-loop replay), which stopped every workload of the step."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.scaler.model import (
    SERIES_FIELDS,
    CurrentState,
    ScalerConfig,
    SignalWindow,
    WorkloadRef,
)
from runqscale.scaler.policies import showar

CFG = ScalerConfig(min_replicas=1, max_replicas=12, max_cpu_per_replica=2.0)
WL = WorkloadRef("shop", "web")


def _window(rng: np.random.Generator, n: int, now: float, replicas: int, limit: float,
            load: float, gaps: float, absent: frozenset[str]) -> SignalWindow:
    ts = now - np.arange(n - 1, -1, -1, dtype=np.float64)
    usage = np.minimum(load, replicas * limit) * rng.uniform(0.8, 1.2, n)
    thr = min(1.0, max(0.0, load / (replicas * limit) - 0.8) * 2.0)
    rate = load / 0.01 * rng.uniform(0.7, 1.3, n)
    values = {
        "replicas": np.full(n, float(replicas)), "ready_replicas": np.full(n, float(replicas)),
        "cpu_usage_cores": usage, "cpu_request_cores": np.full(n, limit),
        "cpu_limit_cores": np.full(n, limit), "runq_p95_seconds": np.full(n, 0.001 + 0.05 * thr),
        "throttled_ratio": np.full(n, thr), "request_rate": rate,
        "pressure": np.full(n, 0.1), "runq_wait_seconds_per_second": rate * 0.002,
        "throttled_seconds_per_second": np.full(n, thr * 0.05 * replicas),
    }
    series = {}
    for name in SERIES_FIELDS:
        if name in absent:
            continue
        arr = values.get(name, rate * 0.0005).astype(np.float64)
        arr[rng.random(n) < gaps] = np.nan
        series[name] = arr
    return SignalWindow(WL, ts, series)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), load=st.floats(0.05, 6.0),
       gaps=st.sampled_from([0.0, 0.1, 0.5, 0.95]),
       absent=st.frozensets(st.sampled_from(SERIES_FIELDS), max_size=6),
       steps=st.integers(1, 8))
def test_decisions_on_windows_with_gaps_stay_within_bounds(seed: int, load: float, gaps: float,
                                                          absent: frozenset[str],
                                                          steps: int) -> None:
    rng = np.random.default_rng(seed)
    current, state, now = CurrentState(2, 0.5, 0.5), None, 1_750_000_000.0
    for _ in range(steps):
        now += 3.0
        w = _window(rng, 60, now, current.replicas, current.cpu_limit_cores or 0.5, load,
                    gaps, absent)
        rec, state = showar.decide(w, current, CFG, state)
        new = rec.recommended
        assert CFG.min_replicas <= new.replicas <= CFG.max_replicas, rec.reason
        lim = new.cpu_limit_cores
        assert lim is None or (math.isfinite(lim) and 0 < lim <= CFG.max_cpu_per_replica), \
            rec.reason
        current = new
