"""Builders shared by the scaler tests (no tests here)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runqscale.scaler.model import SERIES_FIELDS, PodSample, SignalWindow, WorkloadRef

NOW = 1_700_000_000.0
WL = WorkloadRef("default", "web")


def window(
    n: int = 100,
    step: float = 3.0,
    now: float = NOW,
    workload: WorkloadRef = WL,
    pods: Sequence[PodSample] = (),
    **values: float | Sequence[float] | np.ndarray | None,
) -> SignalWindow:
    """A window of n samples ending at `now`; each field a constant, a series, or None (missing)."""
    ts = now - step * np.arange(n - 1, -1, -1, dtype=np.float64)
    series = {}
    for name in SERIES_FIELDS:
        v = values.get(name)
        if v is None:
            series[name] = np.full(n, np.nan)
        elif np.isscalar(v):
            series[name] = np.full(n, float(v))  # type: ignore[arg-type]
        else:
            arr = np.asarray(v, dtype=np.float64)
            assert arr.shape == (n,), (name, arr.shape)
            series[name] = arr
    unknown = set(values) - set(SERIES_FIELDS)
    assert not unknown, unknown
    return SignalWindow(workload, ts, series, tuple(pods))
