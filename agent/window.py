"""A sliding window over one container's cumulative histogram, and its quantiles.

The probe's histograms are cumulative, so the window's histogram is simply the latest cumulative
one minus the one from a window ago. The window keeps references to the cumulative snapshots it was
given (only when they changed: an idle container stores nothing), so adding an interval costs no
arithmetic at all; the subtraction and the quantiles happen at scrape time, cached until the window
changes. Time is passed in, never read here, so the window math tests deterministically.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from runqscale.probes.model import SLOTS, quantile_seconds

_ZERO = np.zeros(SLOTS, dtype=np.uint64)


class SlidingWindow:
    """Waits of the intervals that ended in (now - seconds, now]."""

    __slots__ = ("seconds", "_snaps", "_base", "_version", "_cache")

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("window must be > 0 s")
        self.seconds = seconds
        self._snaps: deque[tuple[float, int, np.ndarray]] = deque()  # (t, count, cumulative)
        self._base: tuple[int, np.ndarray] = (0, _ZERO)  # cumulative as of the window's start
        self._version = 0
        self._cache: tuple[int, tuple[float, ...], list[float | None]] | None = None

    def add(self, t: float, cumulative: np.ndarray, count: int) -> None:
        """The container's cumulative slot counts (and their total) as of time t. The array is
        kept by reference: the caller must not modify it afterwards."""
        last = self._snaps[-1][1] if self._snaps else self._base[0]
        if count < last:  # the counters were reset (kernel entry re-created): start over
            self._snaps.clear()
            self._base = (0, _ZERO)
            last = 0
        if count != last:
            self._snaps.append((t, count, cumulative))
            self._version += 1
        self.expire(t)

    def expire(self, now: float) -> None:
        edge = now - self.seconds
        while self._snaps and self._snaps[0][0] <= edge:
            _, count, cum = self._snaps.popleft()
            self._base = (count, cum)
            self._version += 1

    @property
    def count(self) -> int:
        return (self._snaps[-1][1] if self._snaps else self._base[0]) - self._base[0]

    @property
    def slots(self) -> np.ndarray:
        """Slot counts of the waits inside the window."""
        if not self._snaps:
            return np.zeros(SLOTS, dtype=np.uint64)
        return self._snaps[-1][2] - self._base[1]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Quantiles in seconds (interpolated inside the probe's slots); None when empty.
        Cached until the window changes."""
        c = self._cache
        if c is not None and c[0] == self._version and c[1] == qs:
            return c[2]
        out: list[float | None]
        if not self._snaps:
            out = [None] * len(qs)
        else:
            s = self.slots
            out = [quantile_seconds(s, q) for q in qs]
        self._cache = (self._version, qs, out)
        return out
