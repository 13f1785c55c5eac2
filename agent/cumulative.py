"""Every container's cumulative histogram as one matrix per interval, and the window over them.

The agent reads the probe's whole map every interval. Keeping a few small objects per container
per interval (a histogram, a window entry, a snapshot) cost ~14 us per container in Python: at
500 busy containers, 0.7 % of a core before any scrape. Here an interval is one matrix: row r
holds the cumulative counters of the container that owns row r. The window is the newest
matrix minus the one as of a window ago, so an interval costs a few numpy calls whatever the
number of containers, and a scrape subtracts the window's changes from the newest matrix.

Only the newest matrix is kept whole. The intervals after the window's start are kept as what
changed (flat indices and values of newest minus previous), and the window's start is the
newest matrix minus those changes, worked out at scrape time for the rows a scrape asks for
(`WindowStart`). A window of whole matrices (11 at 10 s / 1 s) was 5.9 MB of the agent's RSS at
500 containers, where a second changes a few of each row's 133 words; the start kept whole
(until stop 45) was another 0.5 MB, remade every interval.

Rows: a container keeps its row while it is tracked; a row freed when its container is dropped
is zeroed and handed out again only once every matrix still kept was built after that (so no
window ever subtracts a previous owner's counts). The lowest reusable row goes first and free
rows at the top are cut off, so after a burst of short-lived cgroups the matrices shrink back
to the containers alive. A row cut off was zero in every matrix the window keeps (it was
released, and zeroed, before the window's start), which is how `WindowStart` reads it.
Matrices are read-only once published: the agent's snapshot holds them while the next interval
builds a new one.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from runqscale.probes.model import SLOTS, VALUE_WORDS


def _frozen(m: np.ndarray) -> np.ndarray:
    m.flags.writeable = False
    return m


_EMPTY = _frozen(np.zeros((0, VALUE_WORDS), dtype=np.uint64))


# what changed from one matrix to the next: flat (indices, values), or the whole difference
# where that is smaller; values are uint64 differences that wrap, so previous + change is the
# next matrix exactly (counters reset or zeroed included)
_Change = tuple[np.ndarray, np.ndarray] | np.ndarray


def _change(prev: np.ndarray, cur: np.ndarray) -> _Change:
    """What changed, read-only: published snapshots hold it (WindowStart)."""
    if prev.shape == cur.shape:
        diff = cur - prev
    else:
        diff = cur.copy()
        keep = min(len(prev), len(cur))
        diff[:keep] -= prev[:keep]
    flat = diff.reshape(-1)
    idx = np.flatnonzero(flat != 0)  # 4x faster on a bool array than on the uint64 one
    if idx.size * 12 >= flat.size * 8:
        return _frozen(diff)
    idx = idx.astype(np.int32) if flat.size < 2**31 else idx
    return _frozen(idx), _frozen(flat[idx])


@dataclass(frozen=True)
class WindowStart:
    """The window's start matrix, not kept whole: its height (0: no matrix is a window old yet,
    so every row starts at 0) and the changes from it to the newest matrix, oldest first, each
    with the height of the matrix it made. Immutable: a snapshot holds it."""

    height: int
    changes: tuple[tuple[int, _Change], ...]

    def rows(self, current: np.ndarray, rows: np.ndarray, cols: int = VALUE_WORDS
             ) -> np.ndarray:
        """The start's values of these rows of `current` (the matrix the changes end at), first
        `cols` words: `current` minus each change, newest first. A row a matrix did not have
        comes out 0 with no special case: a change to a taller matrix holds the new rows' whole
        values (zero-padded), and a row cut off was zero (module docstring). So a row the start
        does not have reads 0, as window_slots takes it. Rows may repeat and come in any
        order."""
        if not self.height or not len(rows):
            return np.zeros((len(rows), cols), dtype=np.uint64)
        rows, back = np.unique(rows, return_inverse=True)  # sorted, each once
        out = current[rows, :cols]  # a copy (fancy indexing)
        pos = None
        for height, change in reversed(self.changes):
            if isinstance(change, tuple):
                idx, vals = change
                if not idx.size:
                    continue
                if pos is None:  # where each asked-for row sits in `out`
                    pos = np.full(max(len(current), int(rows[-1]) + 1), -1, dtype=np.intp)
                    pos[rows] = np.arange(len(rows))
                # flat indices are sorted: take only the span the asked-for rows cover
                lo = np.searchsorted(idx, int(rows[0]) * VALUE_WORDS)
                hi = np.searchsorted(idx, (int(rows[-1]) + 1) * VALUE_WORDS)
                idx, vals = idx[lo:hi], vals[lo:hi]
                r, c = np.divmod(idx, VALUE_WORDS)
                at = pos[r]
                keep = (at >= 0) & (c < cols)
                out[at[keep], c[keep]] -= vals[keep]
            else:
                inside = rows < height
                out[inside] -= change[rows[inside], :cols]
        return out[back]


NO_START = WindowStart(0, ())


class CumulativeTable:
    def __init__(self, window: float) -> None:
        if window <= 0:
            raise ValueError("window must be > 0 s")
        self.window = window
        self._rows = 0  # the matrices' height: 1 + the highest row in use or still remembered
        self._pending: deque[tuple[float, int]] = deque()  # (freed at, row), oldest first
        self._reusable: list[int] = []  # heap of rows no kept matrix remembers an owner of
        # the oldest matrix remembered (the window's start once it is at least a window old):
        # its time (None before the first) and height; its values are not kept
        self._base_t: float | None = None
        self._base_height = 0
        # (time, height, change) of every later interval, oldest first: the base plus all of
        # them is the newest matrix
        self._ring: deque[tuple[float, int, _Change]] = deque()
        self.current = _EMPTY
        self.start = NO_START

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
        oldest = float("inf") if self._base_t is None else self._base_t
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
        rows[i] (rows are distinct: one per container); rows not listed keep their previous
        value, `released` ones become zero."""
        self._promote()
        self._trim()
        prev = self.current
        if len(rows) == self._rows:
            # every row listed (rows are distinct: one per container), as in a steady state:
            # nothing to carry over or zero, one pass instead of three
            cur = np.empty((self._rows, VALUE_WORDS), dtype=np.uint64)
        else:
            cur = np.zeros((self._rows, VALUE_WORDS), dtype=np.uint64)
            keep = min(len(prev), self._rows)
            cur[:keep] = prev[:keep]
            if released:
                cur[released] = 0
        if rows:
            cur[rows] = values
        self.current = _frozen(cur)
        if self._base_t is None:
            self._base_t, self._base_height = now, len(cur)
        else:
            self._ring.append((now, len(cur), _change(prev, self.current)))
        edge = now - self.window
        # the start is the newest matrix at least a window old
        while self._ring and self._ring[0][0] <= edge:
            self._base_t, self._base_height, _ = self._ring.popleft()
        self.start = WindowStart(self._base_height, tuple((h, c) for _, h, c in self._ring)) \
            if self._base_t <= edge else NO_START

    def start_matrix(self) -> np.ndarray:
        """The window's start as a whole matrix (tests and tools; a scrape asks for rows)."""
        height = self.start.height
        if not height:
            return _EMPTY
        rows = np.arange(height)
        out = np.zeros((height, VALUE_WORDS), dtype=np.uint64)
        kept = rows[rows < len(self.current)]
        out[kept] = self.start.rows(self.current, kept)
        return _frozen(out)

    def held_bytes(self) -> int:
        """Bytes of the window's state beyond the newest matrix: the changes."""
        return sum(sum(a.nbytes for a in c) if isinstance(c, tuple) else c.nbytes
                   for _, _, c in self._ring)


def window_slots(current: np.ndarray, start: WindowStart, rows: np.ndarray) -> np.ndarray:
    """Slot counts of the waits inside the window for these rows: newest minus window start
    (rows newer than the start matrix started at 0; a row whose count went down, a kernel
    entry re-created, counts from its new value)."""
    hi = current[rows, :SLOTS]
    lo = start.rows(current, rows, SLOTS)
    reset = hi.sum(axis=1, dtype=np.uint64) < lo.sum(axis=1, dtype=np.uint64)
    lo[reset] = 0
    return hi - lo
