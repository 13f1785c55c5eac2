"""A sliding window of per-interval delta histograms for one container, and its quantiles.

Each interval's delta is stored sparsely (only the slots that changed: most containers wait in a
handful of slots per second), and a running sum is kept so a quantile never re-adds the window.
Time is passed in, never read here, so the window math tests deterministically.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from runqscale.probes.model import SLOTS, quantile_seconds


class SlidingWindow:
    """Waits of the intervals that ended in (now - seconds, now]."""

    __slots__ = ("seconds", "_entries", "_sum", "_version", "_cache")

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("window must be > 0 s")
        self.seconds = seconds
        self._entries: deque[tuple[float, np.ndarray, np.ndarray]] = deque()
        self._sum = np.zeros(SLOTS, dtype=np.uint64)
        self._version = 0
        self._cache: tuple[int, tuple[float, ...], list[float | None]] | None = None

    def add(self, t: float, delta_slots: np.ndarray) -> None:
        """Record the waits of the interval ending at t (delta_slots: uint64[SLOTS])."""
        idx = np.flatnonzero(delta_slots)
        if len(idx):
            cnt = delta_slots[idx].astype(np.uint64)
            self._entries.append((t, idx.astype(np.uint8), cnt))
            self._sum[idx] += cnt
            self._version += 1
        self.expire(t)

    def expire(self, now: float) -> None:
        edge = now - self.seconds
        while self._entries and self._entries[0][0] <= edge:
            _, idx, cnt = self._entries.popleft()
            self._sum[idx] -= cnt
            self._version += 1

    @property
    def count(self) -> int:
        return int(self._sum.sum())

    @property
    def slots(self) -> np.ndarray:
        """Summed slot counts over the window (a view: do not modify)."""
        return self._sum

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Quantiles in seconds (interpolated inside the probe's slots); None when empty.
        Cached until the window changes."""
        c = self._cache
        if c is not None and c[0] == self._version and c[1] == qs:
            return c[2]
        out = [quantile_seconds(self._sum, q) for q in qs]
        self._cache = (self._version, qs, out)
        return out
