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
    tries = [{"rps": r} for r in reads]
    kept = median_measurement(tries)
    assert any(kept is t for t in tries)
    below = sum(r < kept["rps"] for r in reads)
    above = sum(r > kept["rps"] for r in reads)
    # the middle one, or the lower middle one of an even number
    assert below <= (len(reads) - 1) // 2 and above <= len(reads) // 2


def test_one_outlier_of_three_is_not_kept() -> None:
    slow, a, b = ({"rps": r} for r in (103.4, 176.7, 194.8))  # stop 48's reads, 20 s pairs
    assert median_measurement([a, slow, b]) is a
    assert median_measurement([a, b]) is a  # of two, the lower: the load is not overplanned
    with pytest.raises(ValueError, match="no capacity measurement"):
        median_measurement([])


def test_repeated_measurements_in_turn_the_median_kept_failures_left_out(monkeypatch) -> None:
    """The pairs run light, loaded, light, loaded, ... with the first pair's seeds those of a
    single measurement, each after before_each (DSB reseeds its stores there); a failed pair is
    left out and reported; the capacity fails only when every pair did. The loadgen is replaced
    by measurements whose CPU per request is given: this is the choosing, not the measuring."""
    from runqscale.validation import capacity as capmod

    calls: list[tuple[str, float, int]] = []
    # per pair: CPU seconds per request at the loaded rate (no idle CPU): capacity 0.1 / it
    per_request = iter([0.001, None, 0.0004, 0.0005])  # None: no request succeeded

    def fake(_start, _usage, rate, seconds, seed):  # noqa: ANN001, ANN202
        light = rate == 10.0  # the light rate given below; the loaded one is 20 or more
        calls.append(("light" if light else "loaded", rate, seed))
        cpr = fake.cpr = next(per_request) if light else fake.cpr
        if cpr is None:
            raise RuntimeError(f"no request succeeded at {rate:g} req/s")
        return {"rate_rps": rate, "seconds": seconds, "requests": int(rate * seconds),
                "ok": int(rate * seconds), "cpu_seconds": {"a": cpr * rate * seconds},
                "cpu_seconds_per_request": {"a": cpr}}

    monkeypatch.setattr(capmod, "measure_cpu_per_request",
                        lambda start, usage, rate, seconds, seed: fake(start, usage, rate,
                                                                       seconds, seed))
    resets: list[int] = []
    said: list[str] = []
    cap = capmod.measure_capacity(None, None, {"a": 0.1}, 10.0, 10.0, seed=7, repeats=4,
                                  before_each=lambda: resets.append(len(calls)),
                                  say=said.append)
    # pair 2 failed at its light rate: no loaded rate for it
    assert [(k, s) for k, _r, s in calls] == [("light", 7), ("loaded", 8), ("light", 9),
                                              ("light", 11), ("loaded", 12), ("light", 13),
                                              ("loaded", 14)]
    assert resets == [0, 2, 3, 5]  # before each pair's light rate
    assert cap["repeats_rps"] == pytest.approx([100.0, 250.0, 200.0])
    assert cap["rps"] == pytest.approx(200.0) and len(cap["tries"]) == 3
    assert cap["cpu_seconds_per_request"]["a"] == pytest.approx(0.0005)  # the kept pair's own
    assert any("measurement 2 failed, left out: no request succeeded" in m for m in said)
    assert cap["failures"] == [{"measurement": 2, "error": "no request succeeded at 10 req/s"}]
    assert "the median of 3 measurements (100.0-250.0, 2.50x apart)" in said[-1]

    per_request = iter([None, None])
    calls.clear()
    with pytest.raises(RuntimeError, match="no request succeeded"):
        capmod.measure_capacity(None, None, {"a": 0.1}, 10.0, 10.0, repeats=2)
    per_request = iter([None])
    calls.clear()
    with pytest.raises(RuntimeError, match="no request succeeded"):
        capmod.measure_capacity(None, None, {"a": 0.1}, 10.0, 10.0, repeats=1)
    with pytest.raises(ValueError, match="at least once"):
        capmod.measure_capacity(None, None, {"a": 0.1}, 10.0, 10.0, repeats=0)
