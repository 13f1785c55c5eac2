"""Sliding-window math: sums, expiry at the window edge, quantiles from the finer slots."""

from __future__ import annotations

import numpy as np
import pytest

from runqscale.agent.window import SlidingWindow
from runqscale.probes.model import SLOT_HIGH_NS, SLOT_LOW_NS, SLOTS, slot_of


def _slots(waits_ns: list[int]) -> np.ndarray:
    s = np.zeros(SLOTS, dtype=np.uint64)
    for w in waits_ns:
        s[slot_of(w)] += 1
    return s


class Feed:
    """Turns per-interval waits into the cumulative snapshots the window is given."""

    def __init__(self, w: SlidingWindow) -> None:
        self.w, self.cum = w, np.zeros(SLOTS, dtype=np.uint64)

    def add(self, t: float, delta: np.ndarray) -> None:
        self.cum = self.cum + delta
        self.w.add(t, self.cum, int(self.cum.sum()))


def test_empty_window_has_no_quantile() -> None:
    w = SlidingWindow(10)
    assert w.count == 0
    assert w.quantiles((0.95,)) == [None]


def test_sum_and_expiry_at_the_edge() -> None:
    w = SlidingWindow(10)
    f = Feed(w)
    f.add(1.0, _slots([1000] * 5))
    f.add(2.0, _slots([2000] * 3))
    assert w.count == 8
    f.add(11.0, _slots([]))  # interval ending at 1.0 is now exactly one window old: out
    assert w.count == 3
    w.expire(11.999)
    assert w.count == 3
    assert int(w.slots.sum()) == 3
    w.expire(12.0)
    assert w.count == 0
    assert not w.slots.any()


def test_quantile_within_the_slot_of_the_true_value() -> None:
    rng = np.random.default_rng(7)
    waits = rng.lognormal(mean=np.log(200_000), sigma=1.0, size=5000).astype(np.int64)
    w = SlidingWindow(10)
    f = Feed(w)
    for i, chunk in enumerate(np.array_split(waits, 10)):
        f.add(float(i), _slots([int(x) for x in chunk]))
    for q in (0.5, 0.95, 0.99):
        got = w.quantiles((q,))[0]
        true = float(np.quantile(waits, q))
        s = slot_of(int(true))
        assert SLOT_LOW_NS[s] / 1e9 * 0.99 <= got <= SLOT_HIGH_NS[s] / 1e9 * 1.01, (q, got, true)


def test_old_intervals_stop_counting_for_the_quantile() -> None:
    w = SlidingWindow(3)
    f = Feed(w)
    f.add(0.0, _slots([50_000_000] * 100))  # a 50 ms storm
    f.add(1.0, _slots([10_000] * 100))
    assert w.quantiles((0.95,))[0] > 0.04
    for t in (2.0, 3.0):
        f.add(t, _slots([10_000] * 100))
    assert w.quantiles((0.95,))[0] < 20e-6  # the storm left the window


def test_quantiles_cached_until_change() -> None:
    w = SlidingWindow(10)
    f = Feed(w)
    f.add(0.0, _slots([1000]))
    a = w.quantiles((0.95, 0.99))
    assert w.quantiles((0.95, 0.99)) is a
    f.add(1.0, _slots([5000]))
    assert w.quantiles((0.95, 0.99)) is not a


def test_rejects_non_positive_window() -> None:
    with pytest.raises(ValueError):
        SlidingWindow(0)


def test_idle_container_stores_nothing() -> None:
    w = SlidingWindow(10)
    f = Feed(w)
    f.add(0.0, _slots([1000]))
    for t in range(1, 30):
        f.add(float(t), _slots([]))
    assert w.count == 0 and len(w._snaps) == 0


def test_a_counter_reset_starts_the_window_over_instead_of_wrapping() -> None:
    w = SlidingWindow(10.0)
    first = np.zeros(SLOTS, dtype=np.uint64)
    first[50] = 100
    w.add(1.0, first, 100)
    later = first.copy()
    later[50] = 150
    w.add(12.0, later, 150)  # the first snapshot expires and becomes the window's base
    reset = np.zeros(SLOTS, dtype=np.uint64)
    reset[40] = 3
    w.add(13.0, reset, 3)  # the kernel entry was deleted and re-created
    assert w.count == 3
    assert int(w.slots.sum()) == 3 and int(w.slots.max()) == 3
