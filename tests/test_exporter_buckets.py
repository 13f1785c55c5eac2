"""Exported `le` bounds: on probe slot boundaries, 2/octave in 10 us-100 ms, exact re-bucketing."""

from __future__ import annotations

import math

import numpy as np

from runqscale.exporter.buckets import (
    BOUNDS_NS,
    LE_SECONDS,
    LE_STRINGS,
    cumulative_buckets,
    cumulative_buckets_rows,
)
from runqscale.probes.model import SLOT_LOW_NS, SLOTS, slot_of


def test_bounds_are_slot_boundaries_and_increasing() -> None:
    assert all(b in set(SLOT_LOW_NS.astype(int)) for b in BOUNDS_NS)
    assert BOUNDS_NS == sorted(set(BOUNDS_NS))
    assert LE_STRINGS[-1] == "+Inf" and len(LE_STRINGS) == len(BOUNDS_NS) + 1
    assert [float(s) for s in LE_STRINGS[:-1]] == LE_SECONDS


def test_resolution() -> None:
    s = np.array(LE_SECONDS)
    assert 0.9e-6 <= s[0] <= 1.1e-6 and 0.9 <= s[-1] <= 1.1
    dense = s[(s >= 10e-6) & (s <= 101e-3)]
    per_octave = (len(dense) - 1) / math.log2(dense[-1] / dense[0])
    assert per_octave >= 2 - 1e-9
    assert dense[0] <= 12.3e-6 and dense[-1] >= 100e-3
    assert np.all(np.diff(np.log2(s)) <= 1.0 + 1e-9)  # never coarser than one per octave


def test_rebucketing_is_exact() -> None:
    rng = np.random.default_rng(3)
    waits = rng.integers(1, 2_000_000_000, size=20_000)
    waits = np.concatenate([waits, np.array(BOUNDS_NS) - 1, np.array(BOUNDS_NS)])
    slots = np.zeros(SLOTS, dtype=np.uint64)
    for w in waits:
        slots[slot_of(int(w))] += 1
    got = cumulative_buckets(slots)
    want = [int((waits < b).sum()) for b in BOUNDS_NS] + [len(waits)]
    assert got.tolist() == want


def test_rows_rebucket_like_one_row_each() -> None:
    """The collector re-buckets all containers in one call: row by row the same counts."""
    rng = np.random.default_rng(5)
    m = rng.integers(0, 1000, size=(7, SLOTS)).astype(np.uint64)
    m[2] = 0
    got = cumulative_buckets_rows(m)
    assert got.tolist() == [cumulative_buckets(row).tolist() for row in m]
    assert cumulative_buckets_rows(np.zeros((0, SLOTS), dtype=np.uint64)).shape == (
        0, len(LE_STRINGS))
