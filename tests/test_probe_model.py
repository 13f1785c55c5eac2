"""The histogram slot scheme shared by the BPF program and user space (pure, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runqscale.probes.model import (
    SLOT_HIGH_NS,
    SLOT_LOW_NS,
    SLOTS,
    quantile_seconds,
    quantiles_rows,
    slot_of,
)


@given(st.integers(min_value=0, max_value=2**33 - 1))
def test_every_wait_lands_in_the_slot_whose_bounds_hold_it(ns: int) -> None:
    s = slot_of(ns)
    assert SLOT_LOW_NS[s] <= ns < SLOT_HIGH_NS[s]


@given(st.integers(min_value=2**33, max_value=2**63))
def test_waits_past_the_range_go_to_the_last_slot(ns: int) -> None:
    assert slot_of(ns) == SLOTS - 1


def test_slots_tile_the_line_and_are_at_most_a_quarter_octave_wide() -> None:
    assert np.all(SLOT_HIGH_NS[:-2] == SLOT_LOW_NS[1:-1])
    wide = SLOT_LOW_NS >= 4
    assert np.all((SLOT_HIGH_NS[wide][:-1] - SLOT_LOW_NS[wide][:-1])
                  <= 0.25 * SLOT_LOW_NS[wide][:-1])


@given(st.lists(st.integers(min_value=1_000, max_value=500_000_000), min_size=20, max_size=400),
       st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_quantile_estimate_is_within_the_slot_of_the_true_quantile(waits: list[int],
                                                                    q: float) -> None:
    slots = np.zeros(SLOTS, dtype=np.uint64)
    for w in waits:
        slots[slot_of(w)] += 1
    est = quantile_seconds(slots, q)
    assert est is not None
    true = sorted(waits)[max(0, int(np.ceil(q * len(waits))) - 1)]
    s = slot_of(true)
    # The estimate lies in the true quantile's slot (interpolation never leaves it).
    assert SLOT_LOW_NS[s] / 1e9 - 1e-12 <= est <= SLOT_HIGH_NS[s] / 1e9 + 1e-12


def test_empty_histogram_has_no_quantile() -> None:
    assert quantile_seconds(np.zeros(SLOTS, dtype=np.uint64), 0.95) is None


def test_holder_split_is_read_after_the_sum_and_subtracts_like_the_histogram() -> None:
    from runqscale.probes.model import HOLDERS, VALUE_WORDS, CgroupHistogram

    row0, row1 = np.zeros(VALUE_WORDS, np.uint64), np.zeros(VALUE_WORDS, np.uint64)
    row0[5], row0[SLOTS], row0[SLOTS + 1:] = 2, 300, [100, 200, 0, 0]
    row1[5], row1[SLOTS], row1[SLOTS + 1:] = 5, 1300, [100, 900, 100, 200]
    h0, h1 = CgroupHistogram.from_row(7, row0), CgroupHistogram.from_row(7, row1)
    d = h1.minus(h0)
    assert d.count == 3 and d.sum_ns == 1000
    assert d.held_seconds() == dict(zip(HOLDERS, [0.0, 7e-7, 1e-7, 2e-7], strict=True))
    assert h1.minus(h1).held_seconds() == dict.fromkeys(HOLDERS, 0.0)  # an idle interval
    assert CgroupHistogram.from_row(7, row1, held=False).minus(None).held_seconds() is None


@given(st.lists(st.lists(st.integers(min_value=0, max_value=50), min_size=SLOTS, max_size=SLOTS)
                .map(lambda r: [v if v > 40 else 0 for v in r]), min_size=1, max_size=12),
       st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=4))
def test_the_vectorised_quantiles_equal_the_one_row_quantile(rows: list[list[int]],
                                                             qs: list[float]) -> None:
    """The exporter computes every container's window quantiles in one call (quantiles_rows);
    each must be what quantile_seconds gives for that row alone, empty rows included."""
    m = np.array(rows, dtype=np.uint64)
    got = quantiles_rows(m, tuple(qs))
    for r, row in enumerate(m):
        for j, q in enumerate(qs):
            want = quantile_seconds(row, q)
            if want is None:
                assert np.isnan(got[r, j])
            else:
                assert got[r, j] == pytest.approx(want, rel=1e-12, abs=1e-15)
