"""The replay's realised load against its plan: CPU per request served over kept runs, against
the CPU per request the capacity stands for, in one line to compare invocations by; and which
of several capacity measurements is kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runqscale.validation.capacity import load_line, median_measurement, realised_load


def _run(used: float | None, requests: int, failed: int = 0,
         excluded: str | None = None) -> dict:
    return {"cpu_core_seconds_used": used, "requests": requests, "failed": failed,
            "excluded": excluded}


def test_median_over_kept_runs_per_request_served() -> None:
    # 0.8 cores at 55.9 req/s stand for 14.3 ms per request; three kept runs at 17, 18.7, 20 ms
    runs = [_run(18.7e-3 * 4000, 4100, failed=100), _run(20.0e-3 * 4000, 4000),
            _run(17.0e-3 * 3000, 3000),
            _run(99.0, 10, excluded="steal 9 %"),  # excluded: left out
            _run(5.0, 0), _run(5.0, 50, failed=50),  # nothing served: left out
            _run(None, 1000)]  # no CPU reading: left out
    r = realised_load(runs, 0.8, 55.9)
    assert r is not None and r["kept_runs"] == 3
    assert r["used_cpu_seconds_per_request"] == pytest.approx(18.7e-3)
    assert r["planned_cpu_seconds_per_request"] == pytest.approx(0.8 / 55.9)
    assert r["ratio"] == pytest.approx(18.7e-3 / (0.8 / 55.9))
    line = load_line(r, capacity_given=True)
    assert line == ("load: the runs used a median 18.7 ms of CPU per request served, 1.31x the "
                    "14.3 ms the capacity (given with --capacity) stands for at full load; "
                    "--capacity is stale on this machine: omit it to measure the capacity first")


def test_a_stale_given_capacity_says_how_to_fix_it() -> None:
    heavy = realised_load([_run(1.41 * 0.8 / 55.9 * 1000, 1000)], 0.8, 55.9)
    light = realised_load([_run(0.7 * 0.8 / 55.9 * 1000, 1000)], 0.8, 55.9)
    held = realised_load([_run(1.2 * 0.8 / 55.9 * 1000, 1000)], 0.8, 55.9)
    # at the bounds as printed: 1.2496 reads "1.25x", 0.8049 "0.80x"
    edge_high = realised_load([_run(1.2496 * 0.8 / 55.9 * 1000, 1000)], 0.8, 55.9)
    edge_low = realised_load([_run(0.8049 * 0.8 / 55.9 * 1000, 1000)], 0.8, 55.9)
    inside = realised_load([_run(0.8051 * 0.8 / 55.9 * 1000, 1000)], 0.8, 55.9)
    for r, stale in ((heavy, True), (light, True), (held, False), (edge_high, True),
                     (edge_low, True), (inside, False)):
        given = load_line(r, capacity_given=True)
        assert given is not None and ("omit it to measure the capacity" in given) == stale, given
        measured = load_line(r, capacity_given=False)  # a measured one is not the user's to fix
        assert measured is not None and "stale" not in measured


def test_a_measured_capacity_is_named_as_such() -> None:
    r = realised_load([_run(0.8 / 55.9 * 1000, 1000)], 0.8, 55.9)
    assert r is not None and r["ratio"] == pytest.approx(1.0)
    line = load_line(r, capacity_given=False)
    assert line is not None and "1.00x" in line and "measured before the runs" in line


def test_nothing_served_or_no_plan_gives_no_reading() -> None:
    assert realised_load([], 0.8, 55.9) is None
    assert realised_load([_run(1.0, 0)], 0.8, 55.9) is None
    assert realised_load([_run(1.0, 10)], 0.8, 0.0) is None
    assert realised_load([_run(1.0, 10)], 0.0, 55.9) is None
    assert load_line(None, capacity_given=True) is None


@given(st.lists(st.floats(1.0, 1000.0), min_size=1, max_size=9))
def test_the_measurement_with_the_median_capacity_is_kept_whole(reads: list[float]) -> None:
    """One pair read 2x the others' CPU per request when the machine slowed (stop 48): the
    median of three keeps it out. The kept measurement is one of them, its own idle CPU and
    CPU per request with it, not an average of several."""
    tries = [{"rps": r, "idle_cores": {"a": i}} for i, r in enumerate(reads)]
    kept = median_measurement(tries)
    assert any(kept is t for t in tries)
    below = sum(r < kept["rps"] for r in reads)
    above = sum(r > kept["rps"] for r in reads)
    # the middle one, or the lower middle one of an even number
    assert below <= (len(reads) - 1) // 2 and above <= len(reads) // 2
    assert tries[kept["idle_cores"]["a"]] is kept


def test_one_outlier_of_three_is_not_kept() -> None:
    slow, a, b = ({"rps": r} for r in (103.4, 176.7, 194.8))  # stop 48's reads, 20 s pairs
    assert median_measurement([a, slow, b]) is a
    assert median_measurement([a, b]) is a  # of two, the lower: the load is not overplanned
    with pytest.raises(ValueError, match="no capacity measurement"):
        median_measurement([])
