"""The runlang penalty, scores and report.json contract on hand-made batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runqscale.validation import report as rpt
from runqscale.validation.scoring import (
    FAILURE_WEIGHT,
    Requests,
    Timeline,
    batch_replicas,
    penalty,
    percentiles,
    score,
)

NAN = float("nan")


def requests() -> Requests:
    # batch 0 [0, 5): two successes (1 s, 3 s) and one failure; batch 1 [5, 10): one of 0.5 s
    return Requests(
        scheduled=np.array([0.1, 1.0, 4.9, 7.0]),
        latency=np.array([1.0, 3.0, NAN, 0.5]),
        ok=np.array([True, True, False, True]),
        late=np.array([0.0, 0.02, 0.0, 0.0]),
    )


def timeline() -> Timeline:
    return Timeline(t=np.array([0.0, 5.0]), replicas=np.array([1.0, 3.0]),
                    limit_cores=np.array([0.5, 1.0]), used_cores=np.array([0.2, 0.4]))


def test_penalty_terms_by_hand() -> None:
    p = penalty(requests(), np.array([1.0, 3.0]))
    # Σ succ_i rt_i² / Σ succ_i = (2 × 2² + 1 × 0.5²) / 3
    assert p.latency == pytest.approx((2 * 4 + 0.25) / 3)
    assert p.failures == pytest.approx(0.25 * 900)  # failure rate 1/4 × 30²
    assert p.replicas == pytest.approx(2.0)
    assert p.total == pytest.approx(p.latency + p.failures + p.replicas)
    assert FAILURE_WEIGHT == 900


def test_penalty_edge_cases() -> None:
    none = Requests(np.array([0.0, 1.0]), np.array([NAN, NAN]), np.array([False, False]),
                    np.zeros(2))
    p = penalty(none, np.array([2.0]))
    assert p.latency == 0 and p.failures == pytest.approx(900) and p.replicas == 2
    assert penalty(Requests.empty(), np.array([1.0])).total == pytest.approx(1.0)


def test_batch_replicas_is_time_weighted() -> None:
    tl = Timeline(np.array([0.0, 2.5]), np.array([2.0, 4.0]), np.ones(2), np.zeros(2))
    assert batch_replicas(tl, 10.0).tolist() == pytest.approx([3.0, 4.0])


def test_score_by_hand() -> None:
    s = score(requests(), timeline(), seconds=10.0, slo_seconds=1.5)
    assert s.requests == 4 and s.failed == 1 and s.late == 1
    assert s.slo_violation_ratio == pytest.approx(2 / 4)  # the failure and the 3 s one
    assert s.cpu_core_seconds_allocated == pytest.approx(1 * 0.5 * 5 + 3 * 1.0 * 5)
    assert s.cpu_core_seconds_requested == s.cpu_core_seconds_allocated  # request = limit
    assert s.cpu_core_seconds_used == pytest.approx(0.2 * 5 + 0.4 * 5)
    assert s.mean_replicas == pytest.approx(2.0)
    assert s.penalty.latency == pytest.approx(8.25 / 3)
    assert s.p50_seconds == pytest.approx(1.0, rel=1e-3)
    assert s.p99_seconds == pytest.approx(3.0, rel=1e-3)


def test_percentiles_hdr_precision() -> None:
    lat = np.arange(1, 1001) / 1000.0  # 1 ms .. 1 s
    p50, p95, p99 = percentiles(lat)
    assert p50 == pytest.approx(0.5, rel=2e-3)
    assert p95 == pytest.approx(0.95, rel=2e-3)
    assert p99 == pytest.approx(0.99, rel=2e-3)
    assert percentiles(np.array([NAN])) == [None, None, None]


def test_report_contract_exact_keys_and_summary(tmp_path) -> None:
    s1 = score(requests(), timeline(), 10.0, 1.5)
    s2 = score(requests(), Timeline(np.array([0.0]), np.array([2.0]), np.array([1.0]),
                                    np.array([0.3])), 10.0, 1.5)
    runs = [rpt.run_entry("showar", 0, s1, 3), rpt.run_entry("showar", 1, s2, 5),
            rpt.run_entry("hpa", 0, s1, 1)]
    info = rpt.TraceInfo("wc.csv", {"start": "a", "end": "b", "trace_seconds": 60.0}, 0.5, 10.0)
    rep = rpt.build_report(info, 0.5, runs)
    path = str(tmp_path / "report.json")
    rpt.write_json(path, rep)
    rep = json.load(open(path))
    assert set(rep) == {"trace", "slo_seconds", "runs", "summary", "comparisons", "exclusions"}
    assert set(rep["trace"]) == {"file", "segment", "scale", "time_warp"}
    assert set(rep["runs"][0]) == {
        "policy", "repeat", "requests", "failed", "p50_seconds", "p95_seconds", "p99_seconds",
        "slo_violation_ratio", "cpu_core_seconds_requested", "cpu_core_seconds_allocated",
        "cpu_core_seconds_used", "mean_replicas", "decisions", "penalty", "penalty_terms"}
    assert set(rep["runs"][0]["penalty_terms"]) == {"latency", "failures", "replicas"}
    d = rep["summary"]["showar"]["decisions"]
    assert d == {"mean": 4.0, "min": 3.0, "max": 5.0}
    alloc = rep["summary"]["showar"]["cpu_core_seconds_allocated"]
    assert alloc["min"] == pytest.approx(17.5) and alloc["max"] == pytest.approx(20.0)
    assert list(rep["summary"]) == ["showar", "hpa"]
    assert rep["summary"]["hpa"]["penalty"]["mean"] == pytest.approx(s1.penalty.total)


def test_plots_render(tmp_path) -> None:
    t = np.arange(0, 20.0)
    series = {"showar": {"t": t, "load": t, "replicas": np.ones(20), "allocated": np.ones(20),
                         "used": np.ones(20) / 2, "lat_t": np.arange(4) * 5.0,
                         "p50": np.full(4, 0.1), "p99": np.full(4, 0.3)}}
    rpt.plot_timelines(str(tmp_path / "timeline.png"), series, 0.5, "t")
    s = score(requests(), timeline(), 10.0, 1.5)
    summ = rpt.summarize([rpt.run_entry("showar", 0, s, 1)])
    rpt.plot_scores(str(tmp_path / "scores.png"), summ, "t")
    for n in ("timeline.png", "scores.png"):
        assert (tmp_path / n).read_bytes()[:4] == b"\x89PNG"


def test_cost_requested_allocated_and_the_node_share_without_a_limit() -> None:
    t = np.array([0.0, 5.0])
    reps = np.array([2.0, 4.0])
    # 0.2 requested, limit 0.5 then no limit: 4 replicas share the 2-CPU node -> 0.5 each
    tl = Timeline(t, reps, np.array([0.5, 0.0]), np.zeros(2), request_cores=np.array([0.2, 0.2]),
                  node_cpus=2.0)
    s = score(requests(), tl, seconds=10.0, slo_seconds=1.5)
    assert s.cpu_core_seconds_requested == pytest.approx(2 * 0.2 * 5 + 4 * 0.2 * 5)
    assert s.cpu_core_seconds_allocated == pytest.approx(2 * 0.5 * 5 + 4 * 0.5 * 5)
    # a request above the limit is what is allocated
    tl = Timeline(t, reps, np.array([0.5, 0.5]), np.zeros(2), request_cores=np.array([0.8, 0.1]))
    assert score(requests(), tl, 10.0, 1.5).cpu_core_seconds_allocated == \
        pytest.approx(2 * 0.8 * 5 + 4 * 0.5 * 5)


def test_report_comparisons_and_exclusions_follow_the_runs() -> None:
    s = score(requests(), timeline(), 10.0, 1.5)
    runs = []
    for rep in range(3):
        runs += [rpt.run_entry("showar", rep, s, 1), rpt.run_entry("hpa", rep, s, 1)]
    runs[-1]["excluded"] = "steal 9.0% > 5%"
    rep = rpt.build_report(rpt.TraceInfo("f", {}, 1.0, 10.0), 0.5, runs)
    assert rep["exclusions"] == [{"policy": "hpa", "repeat": 2, "reason": "steal 9.0% > 5%"}]
    c = {(x["baseline"], x["metric"]): x for x in rep["comparisons"]}
    assert c[("hpa", "p99_seconds")]["pairs"] == 2 and c[("hpa", "p99_seconds")]["ratio"] == 1.0
    assert c[("best", "cpu_core_seconds_allocated")]["best_of"] == "hpa"
