"""The agent's window over cumulative matrices (agent/cumulative.py): sums, expiry at the window
edge, quantiles from the finer slots, counter resets, and rows handed to a new container only once
no kept matrix remembers the old one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runqscale.agent.cumulative import CumulativeTable, window_slots
from runqscale.probes.model import (
    SLOT_HIGH_NS,
    SLOT_LOW_NS,
    SLOTS,
    VALUE_WORDS,
    quantile_seconds,
    slot_of,
)


def _slots(waits_ns: list[int]) -> np.ndarray:
    s = np.zeros(SLOTS, dtype=np.uint64)
    for w in waits_ns:
        s[slot_of(w)] += 1
    return s


class Feed:
    """Per-interval waits of one container turned into the cumulative rows the table gets."""

    def __init__(self, table: CumulativeTable) -> None:
        self.table, self.row = table, table.allocate()
        self.cum = np.zeros(VALUE_WORDS, dtype=np.uint64)

    def add(self, t: float, delta: np.ndarray) -> None:
        self.cum[:SLOTS] += delta
        self.table.update(t, [self.row], self.cum[None, :].copy(), [])

    def window(self) -> np.ndarray:
        return window_slots(self.table.current, self.table.start, np.array([self.row]))[0]

    @property
    def count(self) -> int:
        return int(self.window().sum())


def test_empty_window_has_no_quantile() -> None:
    f = Feed(CumulativeTable(10))
    f.add(0.0, _slots([]))
    assert f.count == 0
    assert quantile_seconds(f.window(), 0.95) is None


def test_sum_and_expiry_at_the_edge() -> None:
    f = Feed(CumulativeTable(10))
    f.add(1.0, _slots([1000] * 5))
    f.add(2.0, _slots([2000] * 3))
    assert f.count == 8
    f.add(11.0, _slots([]))  # the interval ending at 1.0 is now exactly one window old: out
    assert f.count == 3
    f.add(11.999, _slots([]))
    assert f.count == 3
    f.add(12.0, _slots([]))
    assert f.count == 0 and not f.window().any()


def test_quantile_within_the_slot_of_the_true_value() -> None:
    rng = np.random.default_rng(7)
    waits = rng.lognormal(mean=np.log(200_000), sigma=1.0, size=5000).astype(np.int64)
    f = Feed(CumulativeTable(10))
    for i, chunk in enumerate(np.array_split(waits, 10)):
        f.add(float(i), _slots([int(x) for x in chunk]))
    for q in (0.5, 0.95, 0.99):
        got = quantile_seconds(f.window(), q)
        true = float(np.quantile(waits, q))
        s = slot_of(int(true))
        assert SLOT_LOW_NS[s] / 1e9 * 0.99 <= got <= SLOT_HIGH_NS[s] / 1e9 * 1.01, (q, got, true)


def test_old_intervals_stop_counting_for_the_quantile() -> None:
    f = Feed(CumulativeTable(3))
    f.add(0.0, _slots([50_000_000] * 100))  # a 50 ms storm
    f.add(1.0, _slots([10_000] * 100))
    assert quantile_seconds(f.window(), 0.95) > 0.04
    for t in (2.0, 3.0):
        f.add(t, _slots([10_000] * 100))
    assert quantile_seconds(f.window(), 0.95) < 20e-6  # the storm left the window


def test_rejects_non_positive_window() -> None:
    with pytest.raises(ValueError):
        CumulativeTable(0)


def test_memory_is_one_window_of_matrices_and_published_ones_are_read_only() -> None:
    table = CumulativeTable(10)
    f = Feed(table)
    for t in range(60):
        f.add(float(t), _slots([1000]))
    assert len(table._ring) <= 10
    with pytest.raises(ValueError):
        table.current[0, 0] = 5
    for _, change in table.start.changes:
        for a in change if isinstance(change, tuple) else (change,):
            with pytest.raises(ValueError):
                a[0] = 5


def test_the_window_keeps_what_changed_not_whole_matrices() -> None:
    """500 containers with a few waits each per second: the window's state (10 intervals'
    changes) is less than one whole matrix (it kept 11, then a start and the changes)."""
    table, rng = CumulativeTable(10), np.random.default_rng(3)
    rows = [table.allocate() for _ in range(500)]
    cum = np.zeros((500, VALUE_WORDS), dtype=np.uint64)
    for t in range(30):
        hit = rng.integers(0, 40, size=(500, 3))  # 3 of the low slots move per container
        np.add.at(cum, (np.arange(500)[:, None], hit), 1)
        cum[:, SLOTS] += 1000  # the wait sum moves too
        table.update(float(t), rows, cum.copy(), [])
    whole = table.current.nbytes
    assert table.held_bytes() < whole  # 10 sparse changes, not 11 matrices (nor a start)


@st.composite
def _histories(draw: st.DrawFn) -> list[tuple[float, str, int]]:
    return draw(st.lists(st.tuples(st.floats(0.2, 3.0), st.sampled_from(
        ["add", "bump", "bump", "bump", "release", "reset", "idle", "flood"]),
        st.integers(0, 7)),
        min_size=1, max_size=40))


@given(_histories(), st.sampled_from([1.0, 2.5, 5.0]))
@settings(max_examples=150, deadline=None)
def test_the_start_is_the_newest_matrix_a_window_old(steps: list, window: float) -> None:
    """Whatever containers come, count, reset and go, the start the table derives from its
    changes is exactly the newest published matrix at least a window old (empty if none)."""
    table = CumulativeTable(window)
    live: dict[int, np.ndarray] = {}
    published: list[tuple[float, np.ndarray]] = []
    t = 0.0
    for dt, op, k in steps:
        t += dt
        rows: list[int] = []
        released: list[int] = []
        if op == "add" or not live:
            r = table.allocate()
            live[r] = np.zeros(VALUE_WORDS, dtype=np.uint64)
            rows.append(r)
        row = sorted(live)[k % len(live)]
        if op == "bump":
            live[row][k * 13 % VALUE_WORDS] += np.uint64(k + 1)
            rows.append(row)
        elif op == "flood":  # every word of every row moves: a change kept whole
            for r in live:
                live[r] += np.uint64(k + 1)
            rows.extend(live)
        elif op == "reset":
            live[row] = np.zeros(VALUE_WORDS, dtype=np.uint64)
            live[row][k] = np.uint64(1)
            rows.append(row)
        elif op == "release" and len(live) > 1:
            del live[row]
            table.release(row, t)
            released.append(row)
        rows = sorted(set(rows) & set(live))
        values = np.array([live[r] for r in rows], dtype=np.uint64).reshape(-1, VALUE_WORDS)
        table.update(t, rows, values, released)
        published.append((t, table.current))
        old = [m for ts, m in published if ts <= t - window]
        want = old[-1] if old else np.zeros((0, VALUE_WORDS), dtype=np.uint64)
        start = table.start_matrix()
        assert start.shape == want.shape
        assert np.array_equal(start, want)
        # any rows, in any order, repeated (a scrape's block): the same values, 0 past the
        # start's end; the slots alone too
        mine = sorted(live)
        some = np.array([mine[(k + 3 * i) % len(mine)] for i in range(k + 2)][::-1],
                        dtype=np.intp)
        padded = np.zeros((len(table.current), VALUE_WORDS), dtype=np.uint64)
        padded[:len(want)] = want[:len(table.current)]
        assert np.array_equal(table.start.rows(table.current, some), padded[some])
        assert np.array_equal(table.start.rows(table.current, some, SLOTS),
                              padded[some, :SLOTS])
        # what published snapshots share cannot be written to
        for _, change in table.start.changes:
            for a in change if isinstance(change, tuple) else (change,):
                assert not a.flags.writeable


def test_a_counter_reset_starts_the_window_over_instead_of_wrapping() -> None:
    table = CumulativeTable(10.0)
    row = table.allocate()
    first = np.zeros((1, VALUE_WORDS), dtype=np.uint64)
    first[0, 50] = 100
    table.update(1.0, [row], first, [])
    later = first.copy()
    later[0, 50] = 150
    table.update(12.0, [row], later, [])  # the first matrix becomes the window's start
    reset = np.zeros((1, VALUE_WORDS), dtype=np.uint64)
    reset[0, 40] = 3
    table.update(13.0, [row], reset, [])  # the kernel entry was deleted and re-created
    w = window_slots(table.current, table.start, np.array([row]))[0]
    assert int(w.sum()) == 3 and int(w.max()) == 3


def test_a_released_row_is_reused_only_once_no_window_can_see_its_old_owner() -> None:
    table = CumulativeTable(5.0)
    old = Feed(table)
    for t in range(5):
        old.add(float(t), _slots([1000] * 100))
    table.release(old.row, 5.0)
    table.update(5.0, [], np.zeros((0, VALUE_WORDS), np.uint64), [old.row])
    assert not table.current[old.row].any()  # its counters left the newest matrix at once
    fresh = table.allocate()
    assert fresh != old.row  # kept matrices still hold the old owner's counts
    for t in range(6, 12):
        table.update(float(t), [], np.zeros((0, VALUE_WORDS), np.uint64), [])
    reused = table.allocate()
    assert reused == old.row
    mine = np.zeros((1, VALUE_WORDS), dtype=np.uint64)
    mine[0, 30] = 2
    table.update(12.0, [reused], mine, [])
    w = window_slots(table.current, table.start, np.array([reused]))[0]
    assert int(w.sum()) == 2  # its own waits only


def test_matrices_shrink_back_after_a_burst_of_short_lived_containers() -> None:
    """A burst of 300 cgroups that all go away: once no kept matrix remembers them, the
    matrices are as small as the containers still alive (not as the largest burst ever)."""
    table = CumulativeTable(3.0)
    keep = table.allocate()
    burst = [table.allocate() for _ in range(300)]
    one = np.ones((301, VALUE_WORDS), dtype=np.uint64)
    table.update(0.0, [keep, *burst], one, [])
    for r in burst:
        table.release(r, 1.0)
    table.update(1.0, [keep], one[:1], burst)
    assert table.current.shape[0] == 301  # still remembered by the matrix at 0.0
    for t in (2.0, 3.0, 4.0, 5.0):
        table.update(t, [keep], one[:1], [])
    assert table.current.shape[0] == 1
    assert table.allocate() == 1
    w = window_slots(table.current, table.start, np.array([keep]))[0]
    assert not w.any()  # its counters did not move in the window
