"""The replay's realised load against its plan: CPU per request over kept runs, and the one-line
warning when a fixed --capacity no longer matches the machine."""

from __future__ import annotations

import pytest

from runqscale.validation.capacity import DRIFT_WARN, drift_warning, realised_load


def _run(used: float, requests: int, excluded: str | None = None) -> dict:
    return {"cpu_core_seconds_used": used, "requests": requests, "excluded": excluded}


def test_median_over_kept_runs_against_the_capacitys_cpu_per_request() -> None:
    # 0.8 cores at 55.9 req/s stand for 14.3 ms per request; the runs used 18.7 ms (stop 34)
    runs = [_run(18.7e-3 * 4000, 4000), _run(20.0e-3 * 4000, 4000), _run(17.0e-3 * 3000, 3000),
            _run(99.0, 10, excluded="steal 9 %"), _run(5.0, 0)]
    r = realised_load(runs, 0.8, 55.9)
    assert r is not None and r["runs"] == 3
    assert r["cpu_seconds_per_request"] == pytest.approx(18.7e-3)
    assert r["planned_cpu_seconds_per_request"] == pytest.approx(0.8 / 55.9)
    assert r["ratio"] == pytest.approx(18.7e-3 / (0.8 / 55.9))
    line = drift_warning(r, capacity_given=True)
    assert line is not None and "heavier than planned" in line and "--capacity" in line
    assert "18.7 ms" in line and "1.31x" in line


def test_on_plan_is_silent_and_lighter_is_named() -> None:
    on_plan = realised_load([_run(0.8 / 55.9 * 1000, 1000)], 0.8, 55.9)
    assert on_plan is not None and on_plan["ratio"] == pytest.approx(1.0)
    assert drift_warning(on_plan, capacity_given=True) is None
    light = realised_load([_run(0.8 / 55.9 / (DRIFT_WARN * 1.05) * 1000, 1000)], 0.8, 55.9)
    line = drift_warning(light, capacity_given=False)
    assert line is not None and "lighter than planned" in line and "--capacity" not in line


def test_nothing_served_or_no_plan_gives_none() -> None:
    assert realised_load([], 0.8, 55.9) is None
    assert realised_load([_run(1.0, 0)], 0.8, 55.9) is None
    assert realised_load([_run(1.0, 10)], 0.8, 0.0) is None
    assert drift_warning(None, capacity_given=True) is None
