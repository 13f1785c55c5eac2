"""scaler/policies/attribution.py: behind whom a workload waited, table and property tests.

The table's first rows are the shapes the kernel test measures (tests/test_probe_holders.py,
tests/test_exporter_holders.py): a victim beside a neighbour hog waits behind other cgroups, an
oversubscribed container behind its own threads, and a quota-throttled one on an idle CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_scaler_helpers import window

from runqscale.scaler.model import HOLDER_FIELDS
from runqscale.scaler.policies.attribution import (
    HOLDERS,
    Attribution,
    AttributionConfig,
    attribute,
    attribute_window,
)

SETTINGS = settings(max_examples=300, deadline=None)


def split(same: float = 0.0, other: float = 0.0, kernel: float = 0.0,
          idle: float = 0.0) -> dict[str, float]:
    return {"same_cgroup": same, "other_cgroup": other, "kernel": kernel, "idle": idle}


@pytest.mark.parametrize("held, throttled, cause, suggests", [
    # a victim sharing its CPU with a neighbour hog
    (split(same=0.02, other=0.9, kernel=0.01), 0.0, "neighbours", "scale_out"),
    # three threads on one CPU: each waits behind its siblings
    (split(same=1.8, other=0.1), 0.0, "own", "resize"),
    # a 0.5-core quota on an otherwise idle node: throttled waits on an idle CPU
    (split(same=0.05, idle=0.45), 0.5, "own", "resize"),
    # throttled beside a busy neighbour: the throttled time is the workload's, not the
    # neighbour's, though the neighbour ran meanwhile
    (split(same=0.1, other=0.5), 0.45, "own", "resize"),
    # more idle (quota) wait beside throttled time never shifts the blame to the neighbours
    (split(other=1.0, idle=0.6), 0.6, "own", "resize"),
    # the same neighbour time without throttling is the neighbour's
    (split(same=0.1, other=0.5), 0.0, "neighbours", "scale_out"),
    # mostly kernel threads: neither side reaches the threshold
    (split(same=0.2, other=0.2, kernel=0.6), 0.0, "mixed", None),
    (split(same=0.45, other=0.45, kernel=0.1), 0.0, "mixed", None),
    # too little wait to say, however it splits
    (split(other=0.04), 0.0, "insufficient", None),
    (split(), 0.0, "insufficient", None),
    # no split at all (the bcc backend, or an agent without the metric)
    ({}, 0.3, "unknown", None),
    ({"same_cgroup": None, "other_cgroup": math.nan}, None, "unknown", None),
])
def test_table(held, throttled, cause, suggests) -> None:
    a = attribute(held, throttled)
    assert (a.cause, a.suggests) == (cause, suggests), a
    assert a.reason  # every verdict explains itself


def test_shares_and_reason_carry_the_numbers() -> None:
    a = attribute(split(same=0.1, other=0.6, idle=0.1, kernel=0.1), throttled_seconds=0.2)
    # idle is the quota's, and so are 0.2 s/s of the waits behind other cgroups
    assert a.wait == pytest.approx(0.9)
    assert a.neighbours == pytest.approx(0.4 / 0.9)
    assert a.own_threads == pytest.approx(0.1 / 0.9)
    assert a.own_quota == pytest.approx(0.3 / 0.9)
    assert a.other == pytest.approx(0.1 / 0.9)
    assert a.cause == "mixed"
    assert "44% behind other cgroups" in a.reason and "0.9 s/s" in a.reason


def test_threshold_and_floor_are_configurable() -> None:
    held = split(same=0.3, other=0.7)
    assert attribute(held, 0.0).cause == "neighbours"
    assert attribute(held, 0.0, AttributionConfig(threshold=0.8)).cause == "mixed"
    assert attribute(held, 0.0, AttributionConfig(min_wait_seconds_per_second=2.0)).cause == \
        "insufficient"


@pytest.mark.parametrize("kwargs, field", [
    ({"threshold": 0.5}, "threshold"), ({"threshold": 1.2}, "threshold"),
    ({"min_wait_seconds_per_second": -1.0}, "min_wait_seconds_per_second"),
    ({"min_wait_seconds_per_second": math.inf}, "min_wait_seconds_per_second"),
])
def test_bad_config_names_the_field_and_the_fix(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field) as e:
        AttributionConfig(**kwargs)
    assert "\n" not in str(e.value) and "e.g." in str(e.value)


def test_unknown_holder_is_an_error_naming_the_good_ones() -> None:
    with pytest.raises(ValueError, match="other_cgroup"):
        attribute({"neighbour": 1.0}, 0.0)


def test_window_averages_each_field_over_the_samples_that_have_it() -> None:
    n = 10
    other = np.full(n, 0.8)
    other[3] = np.nan  # a missed scrape is not a zero
    w = window(n=n, throttled_seconds_per_second=0.0,
               **{HOLDER_FIELDS["other_cgroup"]: other, HOLDER_FIELDS["same_cgroup"]: 0.2,
                  HOLDER_FIELDS["kernel"]: 0.0, HOLDER_FIELDS["idle"]: 0.0})
    a = attribute_window(w)
    assert a.cause == "neighbours" and a.wait == pytest.approx(1.0)
    assert a.neighbours == pytest.approx(0.8)
    # the lead's shorter span: only the last samples, where the workload crowds itself
    own = np.array([0.1] * 7 + [0.0] * 3)
    same = np.array([0.0] * 7 + [1.5] * 3)
    w2 = window(n=n, **{HOLDER_FIELDS["other_cgroup"]: own, HOLDER_FIELDS["same_cgroup"]: same})
    assert attribute_window(w2).cause == "own"  # mean same 0.45 vs other 0.07
    assert attribute_window(w2.since(w2.ts[7])).own_threads == pytest.approx(1.0)
    assert attribute_window(window(n=n)).cause == "unknown"  # no split in the signals


# -- properties ---------------------------------------------------------------------------------

rates = st.one_of(st.just(0.0), st.floats(1e-6, 50.0))  # s/s; subnormals would underflow
maybe = st.one_of(st.none(), rates, st.just(math.nan))
holders = st.fixed_dictionaries({h: maybe for h in HOLDERS})
configs = st.builds(AttributionConfig, threshold=st.floats(0.51, 1.0),
                    min_wait_seconds_per_second=st.floats(0.0, 1.0))


def _consistent(a: Attribution, cfg: AttributionConfig) -> None:
    if a.cause in ("unknown", "insufficient"):
        assert a.suggests is None
        return
    parts = (a.neighbours, a.own_threads, a.own_quota, a.other)
    assert all(0.0 <= p <= 1.0 + 1e-12 for p in parts), a
    assert sum(parts) == pytest.approx(1.0), a
    assert a.wait >= cfg.min_wait_seconds_per_second
    assert (a.cause == "neighbours") == (a.neighbours >= cfg.threshold), a
    assert (a.cause == "own") == (a.own >= cfg.threshold), a


@SETTINGS
@given(held=holders, throttled=maybe, cfg=configs)
def test_verdict_agrees_with_its_shares(held, throttled, cfg) -> None:
    a = attribute(held, throttled, cfg)
    _consistent(a, cfg)
    known = [v for v in held.values() if v is not None and math.isfinite(v)]
    assert (a.cause == "unknown") == (not known)
    if known and sum(known) < cfg.min_wait_seconds_per_second:
        assert a.cause == "insufficient"


@SETTINGS
@given(held=holders, throttled=maybe, more=st.floats(0.0, 50.0), cfg=configs)
def test_more_throttling_never_blames_the_neighbours_more(held, throttled, more, cfg) -> None:
    a = attribute(held, throttled, cfg)
    base = 0.0 if throttled is None or math.isnan(throttled) else throttled
    b = attribute(held, base + more, cfg)
    assert b.wait == a.wait
    assert b.neighbours <= a.neighbours + 1e-12
    if a.cause == "own":
        assert b.cause == "own"


@SETTINGS
@given(held=holders, throttled=maybe, which=st.sampled_from(HOLDERS), more=st.floats(0.0, 50.0),
       cfg=configs)
def test_more_wait_behind_one_side_never_moves_the_verdict_to_the_other(
        held, throttled, which, more, cfg) -> None:
    a = attribute(held, throttled, cfg)
    v = held[which]
    grown = dict(held, **{which: (0.0 if v is None or math.isnan(v) else v) + more})
    b = attribute(grown, throttled, cfg)
    if which == "other_cgroup":
        assert not (a.cause == "neighbours" and b.cause == "own"), (a, b)
    if which in ("same_cgroup", "idle"):
        assert not (a.cause == "own" and b.cause == "neighbours"), (a, b)
        assert b.neighbours <= a.neighbours + 1e-12 or a.cause in ("unknown", "insufficient")


@SETTINGS
@given(held=holders, throttled=maybe, k=st.floats(0.01, 100.0))
def test_only_the_floor_depends_on_scale(held, throttled, k) -> None:
    """Multiplying every rate by k changes no share; with no floor, not the verdict either."""
    cfg = AttributionConfig(min_wait_seconds_per_second=0.0)

    def scaled(x):
        return None if x is None else x * k

    a = attribute(held, throttled, cfg)
    b = attribute({h: scaled(v) for h, v in held.items()}, scaled(throttled), cfg)
    if a.cause != b.cause:  # only where a share sits on the threshold, within rounding
        assert math.isclose(a.neighbours, cfg.threshold, abs_tol=1e-9) or \
            math.isclose(a.own, cfg.threshold, abs_tol=1e-9), (a, b)
    else:
        assert b.neighbours == pytest.approx(a.neighbours, abs=1e-9)
        assert b.own == pytest.approx(a.own, abs=1e-9)
