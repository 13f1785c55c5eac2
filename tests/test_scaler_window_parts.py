"""A signal window's parts (`since`, taken several times per decision): each is exactly the
samples from its start on, whatever the nesting, with the whole window's derived series (the
per-replica divisor, the all-NaN stand-in for a missing series) sliced to it; derived arrays
shared between windows are read-only."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.scaler.model import SignalWindow, WorkloadRef

WL = WorkloadRef("shop", "web")


def _window(ready: list[float], replicas: list[float]) -> SignalWindow:
    n = len(ready)
    ts = 1_750_000_000.0 + np.arange(n, dtype=np.float64)
    return SignalWindow(WL, ts, {"ready_replicas": np.array(ready, dtype=np.float64),
                                 "replicas": np.array(replicas, dtype=np.float64),
                                 "cpu_usage_cores": np.arange(n, dtype=np.float64)})


def _divisor(ready: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """The definition, sample by sample: ready if > 0, else replicas if > 0, else NaN."""
    out = []
    for r, n in zip(ready, replicas, strict=True):
        out.append(r if np.isfinite(r) and r > 0 else n if n > 0 else np.nan)
    return np.array(out)


counts = st.one_of(st.just(np.nan), st.just(0.0), st.floats(1, 8).map(round))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 30))
def test_nested_parts_are_the_samples_from_their_start(data: st.DataObject, n: int) -> None:
    ready = data.draw(st.lists(counts, min_size=n, max_size=n))
    replicas = data.draw(st.lists(counts, min_size=n, max_size=n))
    w = _window(ready, replicas)
    starts = data.draw(st.lists(st.floats(w.ts[0] - 2, w.ts[-1] + 2), min_size=1, max_size=4))
    want_div = _divisor(np.array(ready), np.array(replicas))
    part = w
    for t0 in starts:
        if data.draw(st.booleans()):
            part.replicas_divisor  # noqa: B018 - derived before the next part: sliced, not redone
        part = part.since(t0)
        k = part.ts.size
        assert 1 <= k <= n and part.ts[0] >= min(t0, w.ts[-1])
        assert np.array_equal(part.ts, w.ts[n - k:])
        assert np.array_equal(part.get("cpu_usage_cores"), w.get("cpu_usage_cores")[n - k:])
        assert np.array_equal(part.replicas_divisor, want_div[n - k:], equal_nan=True)
        assert part.get("pressure").shape == (k,) and np.isnan(part.get("pressure")).all()
        assert dict(part.series.items()).keys() == w.series.keys()
        assert part.last("cpu_usage_cores") == float(n - 1) and part.now == w.now


def test_shared_derived_series_are_read_only() -> None:
    w = _window([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    part = w.since(w.ts[1])
    for arr in (w.replicas_divisor, part.replicas_divisor, w.get("pressure"),
                part.get("pressure")):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 5.0
