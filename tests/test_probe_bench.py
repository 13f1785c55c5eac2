"""The probe benchmark's paired figures: ratios within a round, not of medians across rounds."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from runqscale.probes.bench import add_paired, paired_loss, paired_ratio


def test_only_rounds_both_ran_are_paired() -> None:
    p = paired_ratio({0: 50.0, 1: 60.0, 3: 1.0}, {0: 100.0, 1: 120.0, 2: 5.0})
    assert p is not None and p["pairs"] == 2
    assert math.isclose(p["ratio"], 0.5) and math.isclose(p["ci_low"], 0.5)
    assert paired_ratio({0: 1.0}, {1: 1.0}) is None


def test_drift_between_rounds_cancels_when_paired() -> None:
    # the machine gets 30 % slower in round 1; the tracer still costs 10 % in each round
    none = {0: 100.0, 1: 70.0, 2: 100.0}
    tracer = {0: 90.0, 1: 63.0, 2: 90.0}
    loss = paired_loss(tracer, none)
    assert math.isclose(loss["throughput_loss_pct_paired"], 10.0)
    lo, hi = loss["throughput_loss_pct_paired_ci"]
    assert math.isclose(lo, 10.0) and math.isclose(hi, 10.0)


@given(st.lists(st.tuples(st.floats(1.0, 1e6), st.floats(0.5, 1.0)), min_size=2, max_size=12))
def test_the_loss_interval_brackets_the_estimate_with_the_most_lost_on_top(
        rounds: list[tuple[float, float]]) -> None:
    none = {i: base for i, (base, _) in enumerate(rounds)}
    tracer = {i: base * kept for i, (base, kept) in enumerate(rounds)}
    loss = paired_loss(tracer, none)
    lo, hi = loss["throughput_loss_pct_paired_ci"]
    est = loss["throughput_loss_pct_paired"]
    assert lo <= est + 1e-9 and est <= hi + 1e-9
    assert -1e-9 <= est <= 50 + 1e-9  # every round kept 50-100 % of its throughput


def test_paired_fields_skip_the_reference_run_itself_and_failed_tracers() -> None:
    tput = {"none": {0: 100.0, 1: 90.0}, "core": {0: 95.0, 1: 86.0}, "bcc-runqlat": {0: 75.0}}
    per_switch = {"core": {0: 100.0, 1: 110.0}, "bcc-runqlat": {0: 700.0}}
    results: dict[str, dict] = {"none": {}, "core": {}, "bcc-runqlat": {"error": "exited"}}
    add_paired(results, tput, per_switch)
    assert results["none"] == {}  # no zero-width interval of a run against itself
    assert results["bcc-runqlat"] == {"error": "exited"}
    assert results["core"]["rounds_paired"] == 2
    assert "ns_per_switch_vs_bcc_runqlat_paired" not in results["core"]  # its reference failed
    results = {"none": {}, "core": {}, "bcc-runqlat": {}}
    add_paired(results, tput, per_switch)
    vs = results["core"]["ns_per_switch_vs_bcc_runqlat_paired"]
    assert vs["pairs"] == 1 and math.isclose(vs["ratio"], 100 / 700)


def test_a_round_without_a_ratio_is_counted_as_dropped() -> None:
    p = paired_ratio({0: 50.0, 1: 0.0, 2: 40.0}, {0: 100.0, 1: 100.0, 2: 80.0})
    assert p is not None and p["pairs"] == 2 and p["rounds_dropped"] == 1
