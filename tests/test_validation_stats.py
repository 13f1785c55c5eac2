"""The paired statistics behind report.json's `comparisons`: geometric means of paired ratios, t
intervals on the log ratios, the zero floor, the best baseline, excluded runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runqscale import intervals
from runqscale.validation import stats


def _run(policy: str, repeat: int, **m: float) -> dict:
    return {"policy": policy, "repeat": repeat, **m}


def test_geometric_mean_and_t_interval_by_hand() -> None:
    iv = intervals.log_mean_ci([0.5, 2.0])
    assert iv.value == pytest.approx(1.0)
    # logs ±ln2: sd = ln2·√2, half-width = 12.706 · ln2·√2 / √2
    h = 12.706 * math.log(2)
    assert iv.ci_low == pytest.approx(math.exp(-h))
    assert iv.ci_high == pytest.approx(math.exp(h))
    assert iv.n == 2


def test_one_pair_has_no_interval() -> None:
    c = stats.compare([_run("showar", 0, p99_seconds=0.1), _run("hpa", 0, p99_seconds=0.2)],
                      "showar", "hpa", "p99_seconds")
    assert c == {"policy": "showar", "baseline": "hpa", "metric": "p99_seconds", "ratio":
                 pytest.approx(0.5), "ci_low": None, "ci_high": None, "pairs": 1}


def test_pairs_by_repeat_and_excluded_runs_drop_their_pair() -> None:
    runs = [_run("showar", 0, x=1.0), _run("hpa", 0, x=2.0),
            _run("showar", 1, x=1.0), _run("hpa", 1, x=4.0, excluded="steal 12%"),
            _run("showar", 2, x=3.0)]  # no hpa run 2: unpaired
    assert stats.paired_values(runs, "showar", "hpa", "x") == [(1.0, 2.0)]


def test_zero_violations_compare_as_equal_not_undefined() -> None:
    runs = [_run("showar", i, slo_violation_ratio=0.0) for i in range(3)] + \
           [_run("hpa", i, slo_violation_ratio=0.0) for i in range(3)]
    c = stats.compare(runs, "showar", "hpa", "slo_violation_ratio")
    assert c["ratio"] == pytest.approx(1.0) and c["ci_low"] == pytest.approx(1.0)


def test_best_baseline_is_per_metric_and_comparisons_cover_every_pair() -> None:
    runs = []
    for i in range(3):
        runs += [_run("showar", i, a=1.0, b=1.0), _run("hpa", i, a=2.0, b=0.5),
                 _run("vpa", i, a=0.5, b=2.0)]
    assert stats.best_baseline(runs, ("hpa", "vpa"), "a") == "vpa"
    assert stats.best_baseline(runs, ("hpa", "vpa"), "b") == "hpa"
    cs = stats.comparisons(runs, baselines=("hpa", "vpa", "phpa-knn"), metrics=("a", "b"))
    keys = {(c["policy"], c["baseline"], c["metric"]) for c in cs}
    assert keys == {("showar", "hpa", "a"), ("showar", "hpa", "b"), ("showar", "vpa", "a"),
                    ("showar", "vpa", "b"), ("showar", "best", "a"), ("showar", "best", "b")}
    best = {c["metric"]: c for c in cs if c["baseline"] == "best"}
    assert best["a"]["best_of"] == "vpa" and best["a"]["ratio"] == pytest.approx(2.0)
    assert best["b"]["best_of"] == "hpa" and best["b"]["ratio"] == pytest.approx(2.0)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError):
        intervals.log_mean_ci([])
    with pytest.raises(ValueError):
        intervals.log_mean_ci([1.0, -1.0])
    with pytest.raises(ValueError):
        intervals.t975(0)


ratios = st.lists(st.floats(0.01, 100.0), min_size=2, max_size=20)


@given(ratios)
def test_interval_contains_the_geometric_mean(rs: list[float]) -> None:
    iv = intervals.log_mean_ci(rs)
    assert min(rs) * (1 - 1e-9) <= iv.value <= max(rs) * (1 + 1e-9)
    assert iv.ci_low <= iv.value * (1 + 1e-9) and iv.value <= iv.ci_high * (1 + 1e-9)


@given(ratios)
def test_swapping_policy_and_baseline_inverts_ratio_and_interval(rs: list[float]) -> None:
    runs = [_run("a", i, m=r) for i, r in enumerate(rs)] + \
           [_run("b", i, m=1.0) for i in range(len(rs))]
    ab = stats.compare(runs, "a", "b", "m")
    ba = stats.compare(runs, "b", "a", "m")
    assert ab["ratio"] * ba["ratio"] == pytest.approx(1.0)
    assert ab["ci_low"] * ba["ci_high"] == pytest.approx(1.0)


@given(st.floats(0.05, 20.0), st.integers(2, 12))
def test_identical_ratios_give_a_zero_width_interval(r: float, n: int) -> None:
    iv = intervals.log_mean_ci([r] * n)
    assert iv.value == pytest.approx(r) and iv.ci_low == pytest.approx(r)
    assert iv.ci_high == pytest.approx(r)
