"""A sliding window over one container's cumulative histogram, and its quantiles.

The probe's histograms are cumulative, so the window's histogram is simply the latest cumulative
one minus the one from a window ago. The window keeps references to the cumulative snapshots it was
given (only when they changed: an idle container stores nothing), so adding an interval costs no
arithmetic at all. `newest` and `start` are the window's two cumulative arrays (the agent's
snapshot keeps them: no copy, no allocation per interval); a `WindowView` of them does the
subtraction and the quantiles on first use, at scrape time. Time is passed in, never read here,
so the window math tests deterministically.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

from runqscale.probes.model import SLOTS, quantile_seconds, quantiles_rows

_ZERO = np.zeros(SLOTS, dtype=np.uint64)


class WindowView:
    """A window's waits at one moment: the newest cumulative slots minus those at its start.
    Immutable (both arrays are the probe's, never modified); quantiles are computed once."""

    __slots__ = ("_hi", "_lo", "_cache")

    def __init__(self, hi: np.ndarray | None, lo: np.ndarray) -> None:
        self._hi, self._lo = hi, lo  # hi None: nothing waited inside the window
        self._cache: tuple[tuple[float, ...], list[float | None]] | None = None

    def of(self, hi: np.ndarray | None, lo: np.ndarray) -> bool:
        """Whether this is the view of these very arrays (then its cached quantiles hold)."""
        return self._hi is hi and self._lo is lo

    @property
    def slots(self) -> np.ndarray:
        """Slot counts of the waits inside the window."""
        if self._hi is None:
            return np.zeros(SLOTS, dtype=np.uint64)
        return self._hi - self._lo

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Quantiles in seconds (interpolated inside the probe's slots); None when empty."""
        c = self._cache
        if c is not None and c[0] == qs:
            return c[1]
        out: list[float | None]
        if self._hi is None:
            out = [None] * len(qs)
        else:
            s = self.slots
            out = [quantile_seconds(s, q) for q in qs]
        self._cache = (qs, out)
        return out


EMPTY_VIEW = WindowView(None, _ZERO)


def fill_quantiles(views: Iterable[WindowView], qs: tuple[float, ...]) -> None:
    """Compute, in one vectorised pass, the quantiles of every view that has none cached (a
    scrape of hundreds of containers whose windows all moved: one numpy call, not hundreds)."""
    todo = [v for v in views
            if v._hi is not None and (v._cache is None or v._cache[0] != qs)]
    if not todo:
        return
    his = np.stack([v._hi for v in todo])  # type: ignore[misc]
    window = his - np.stack([v._lo for v in todo])
    for v, row in zip(todo, quantiles_rows(window, qs).tolist(), strict=True):
        v._cache = (qs, [None if x != x else x for x in row])  # NaN: empty


class SlidingWindow:
    """Waits of the intervals that ended in (now - seconds, now]."""

    __slots__ = ("seconds", "_snaps", "_base", "_version", "_view")

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("window must be > 0 s")
        self.seconds = seconds
        self._snaps: deque[tuple[float, int, np.ndarray]] = deque()  # (t, count, cumulative)
        self._base: tuple[int, np.ndarray] = (0, _ZERO)  # cumulative as of the window's start
        self._version = 0
        self._view: tuple[int, WindowView] = (0, EMPTY_VIEW)

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
    def newest(self) -> np.ndarray | None:
        """The newest cumulative slots inside the window (None: nothing waited in it)."""
        return self._snaps[-1][2] if self._snaps else None

    @property
    def start(self) -> np.ndarray:
        """The cumulative slots as of the window's start."""
        return self._base[1]

    def view(self) -> WindowView:
        """The window now, immutable; the same object until the window changes."""
        version, v = self._view
        if version != self._version:
            v = WindowView(self._snaps[-1][2], self._base[1]) if self._snaps else EMPTY_VIEW
            self._view = (self._version, v)
        return v

    @property
    def slots(self) -> np.ndarray:
        """Slot counts of the waits inside the window."""
        return self.view().slots

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Quantiles in seconds (interpolated inside the probe's slots); None when empty.
        Cached until the window changes."""
        return self.view().quantiles(qs)
