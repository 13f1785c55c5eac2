"""Prometheus `le` bounds that sit exactly on probe slot boundaries, so re-bucketing is exact.

The probe's slots (probes/model.py) split every power of two of nanoseconds into four: their lower
bounds are 2^k * {1, 1.25, 1.5, 1.75}. So 2^k and 1.5 * 2^k are slot boundaries, and a bucket
`le = b` is exactly the sum of the slots below b. The exported buckets are:

  one per octave   2^10 .. 2^13 ns          (1.024 us .. 8.192 us)
  two per octave   1.5 * 2^13 .. 1.5 * 2^26 ns (12.288 us .. 100.663 ms)
  one per octave   2^27 .. 2^30 ns          (134.2 ms .. 1.074 s)
  +Inf

Waits are integer nanoseconds, so bucket `le = b` counts waits < b ns, i.e. <= b - 1 ns: it differs
from "<= b" only for a wait of exactly b ns.
"""

from __future__ import annotations

import numpy as np

from runqscale.probes.model import SLOT_LOW_NS


def bound_ns() -> list[int]:
    out = [1 << k for k in range(10, 14)]
    for k in range(13, 27):
        if k > 13:
            out.append(1 << k)
        out.append(3 << (k - 1))
    out += [1 << k for k in range(27, 31)]
    return out


BOUNDS_NS: list[int] = bound_ns()
LE_SECONDS: list[float] = [b / 1e9 for b in BOUNDS_NS]
LE_STRINGS: list[str] = [repr(s) for s in LE_SECONDS] + ["+Inf"]


def _slot_index(bounds: list[int]) -> np.ndarray:
    """For each bound b, the index of the slot whose lower bound is b (slots [0, i) are < b)."""
    idx = []
    for b in bounds:
        hits = np.nonzero(SLOT_LOW_NS == b)[0]
        if len(hits) != 1:
            raise ValueError(f"{b} ns is not a probe slot boundary")
        idx.append(int(hits[0]))
    return np.asarray(idx, dtype=np.intp)


# cumulative[i] = sum of slots [0, SLOT_END[i]) ; the +Inf bucket is the total.
SLOT_END: np.ndarray = _slot_index(BOUNDS_NS)
_STARTS = np.concatenate([[0], SLOT_END]).astype(np.intp)


def cumulative_buckets(slots: np.ndarray) -> np.ndarray:
    """Per-slot counts (uint64[SLOTS]) -> cumulative bucket counts, one per LE_STRINGS entry."""
    return np.add.reduceat(slots, _STARTS).cumsum()


def cumulative_buckets_rows(slots: np.ndarray) -> np.ndarray:
    """cumulative_buckets for every row of a (rows, SLOTS) matrix: (rows, len(LE_STRINGS))."""
    if not len(slots):
        return np.zeros((0, len(LE_STRINGS)), dtype=np.uint64)
    return np.add.reduceat(slots, _STARTS, axis=1).cumsum(axis=1)
