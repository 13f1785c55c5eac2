"""Every container's cumulative histogram as one matrix per interval, and the window over them.

The agent reads the probe's whole map every interval. Keeping a few small objects per container
per interval (a histogram, a window entry, a snapshot) cost ~14 us per container in Python: at
500 busy containers, 0.7 % of a core before any scrape. Here an interval is one matrix: row r
holds the cumulative counters of the container that owns row r. The window is the newest
matrix minus the one as of a window ago, so an interval costs a few numpy calls whatever the
number of containers, and a scrape subtracts two matrices.

Rows: a container keeps its row while it is tracked; a row freed when its container is dropped
is zeroed and handed out again only once every matrix still kept was built after that (so no
window ever subtracts a previous owner's counts). The lowest reusable row goes first and free
rows at the top are cut off, so after a burst of short-lived cgroups the matrices shrink back
to the containers alive. Matrices are read-only once published: the agent's snapshot holds
them while the next interval builds a new one.
"""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np

from runqscale.probes.model import SLOTS, VALUE_WORDS


def _frozen(m: np.ndarray) -> np.ndarray:
    m.flags.writeable = False
    return m


_EMPTY = _frozen(np.zeros((0, VALUE_WORDS), dtype=np.uint64))


class CumulativeTable:
    def __init__(self, window: float) -> None:
        if window <= 0:
            raise ValueError("window must be > 0 s")
        self.window = window
        self._rows = 0  # the matrices' height: 1 + the highest row in use or still remembered
        self._pending: deque[tuple[float, int]] = deque()  # (freed at, row), oldest first
        self._reusable: list[int] = []  # heap of rows no kept matrix remembers an owner of
        # (time, cumulative matrix), oldest first; the first is the window's start once it is
        # at least a window old
        self._ring: deque[tuple[float, np.ndarray]] = deque()
        self.current = _EMPTY
        self.start = _EMPTY

    def allocate(self) -> int:
        """A row for a new container: the lowest reusable one, else a new one at the top."""
        self._promote()
        if self._reusable:
            return heapq.heappop(self._reusable)
        self._rows += 1
        return self._rows - 1

    def release(self, row: int, now: float) -> None:
        """The row's container was dropped: its counters leave the next matrix."""
        self._pending.append((now, row))

    def _promote(self) -> None:
        """Rows released before the oldest kept matrix was built are remembered by none."""
        oldest = self._ring[0][0] if self._ring else float("inf")
        while self._pending and self._pending[0][0] <= oldest:
            heapq.heappush(self._reusable, self._pending.popleft()[1])

    def _trim(self) -> None:
        """Cut reusable rows off the top (the next matrix is that much smaller)."""
        if not self._reusable:
            return
        free = set(self._reusable)
        top = self._rows
        while top and top - 1 in free:
            top -= 1
        if top < self._rows:
            self._reusable = [r for r in self._reusable if r < top]
            heapq.heapify(self._reusable)
            self._rows = top

    def update(self, now: float, rows: list[int], values: np.ndarray,
               released: list[int]) -> None:
        """The interval at `now`: `values[i]` is the cumulative value of the container in row
        rows[i]; rows not listed keep their previous value, `released` ones become zero."""
        self._promote()
        self._trim()
        prev = self.current
        cur = np.zeros((self._rows, VALUE_WORDS), dtype=np.uint64)
        keep = min(len(prev), self._rows)
        cur[:keep] = prev[:keep]
        if released:
            cur[released] = 0
        if rows:
            cur[rows] = values
        self.current = _frozen(cur)
        self._ring.append((now, self.current))
        edge = now - self.window
        while len(self._ring) > 1 and self._ring[1][0] <= edge:
            self._ring.popleft()
        self.start = self._ring[0][1] if self._ring[0][0] <= edge else _EMPTY


def window_slots(current: np.ndarray, start: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Slot counts of the waits inside the window for these rows: newest minus window start
    (rows newer than the start matrix started at 0; a row whose count went down, a kernel
    entry re-created, counts from its new value)."""
    hi = current[rows, :SLOTS]
    lo = np.zeros_like(hi)
    old = rows < len(start)
    lo[old] = start[rows[old], :SLOTS]
    reset = hi.sum(axis=1, dtype=np.uint64) < lo.sum(axis=1, dtype=np.uint64)
    lo[reset] = 0
    return hi - lo
