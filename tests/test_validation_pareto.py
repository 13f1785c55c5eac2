"""Pareto points from sweep reports: one per (policy, knob), geometric means with t intervals,
excluded runs left out, the front marked; and the bench's settings cover every knob."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runqscale.validation import bench, pareto


def _report(target_ms: float, cpu: float, runs: list[tuple[str, float, float]]) -> dict:
    return {"fairness": {"targets": {"runq_p95_seconds": target_ms / 1e3,
                                     "cpu_utilization": cpu}},
            "runs": [{"policy": p, "repeat": i, "cpu_core_seconds_allocated": c,
                      "p99_seconds": q, "excluded": None} for i, (p, c, q) in enumerate(runs)]}


def test_points_pool_by_policy_and_knob_and_mark_the_front() -> None:
    a = _report(5, 0.75, [("showar", 10.0, 0.1), ("showar", 40.0, 0.1), ("hpa", 20.0, 0.5)])
    b = _report(20, 0.5, [("showar", 5.0, 0.4), ("hpa", 30.0, 0.6)])
    b["runs"].append({"policy": "hpa", "repeat": 9, "cpu_core_seconds_allocated": 1.0,
                      "p99_seconds": 0.01, "excluded": "steal"})
    pts = {(p["policy"], p["knob"]): p for p in pareto.points([a, b])}
    assert set(pts) == {("showar", "5 ms"), ("showar", "20 ms"), ("hpa", "75%"), ("hpa", "50%")}
    s5 = pts[("showar", "5 ms")]
    assert s5["cpu_core_seconds_allocated"] == pytest.approx(20.0) and s5["runs"] == 2
    assert s5["cpu_core_seconds_allocated_ci"][0] < 20.0 < s5["cpu_core_seconds_allocated_ci"][1]
    assert pts[("hpa", "50%")]["runs"] == 1  # the excluded run is not pooled
    assert pts[("hpa", "50%")]["p99_seconds_ci"] == [None, None]
    assert {k for k, p in pts.items() if p["pareto"]} == {("showar", "5 ms"), ("showar", "20 ms")}


@given(st.lists(st.tuples(st.floats(0.1, 100), st.floats(0.1, 100)), min_size=1, max_size=30))
def test_front_points_are_undominated_and_others_dominated(xy) -> None:
    front = pareto.pareto_front(xy)
    assert front
    for i, (a, b) in enumerate(xy):
        dominated = any(c <= a and d <= b and (c < a or d < b) for c, d in xy)
        assert (i in front) != dominated


def test_bench_settings_sweep_every_knob_once() -> None:
    names = [s.name for s in bench.settings()]
    assert names == ["default", "showar-k1", "showar-k3", "hpa-50pct", "hpa-70pct",
                     "hpa-90pct"]
    assert bench.settings()[0].policies == ("showar", "hpa", "vpa", "phpa-knn")
    some = bench.settings((1.0, 4.0), (0.5,), ("showar", "hpa"), ("hpa",), (5.0, 10.0))
    assert [(s.name, s.policies, s.args) for s in some] == [
        ("default", ("showar", "hpa"), ()),
        ("showar-k1", ("showar",), ("--showar-margin", "1")),
        ("showar-k4", ("showar",), ("--showar-margin", "4")),
        ("showar-10ms", ("showar",), ("--target-runq-p95", "10ms")),
        ("hpa-50pct", ("hpa",), ("--target-cpu", "0.5"))]


def test_showar_points_are_labelled_by_margin_and_a_non_default_target() -> None:
    a = _report(5, 0.7, [("showar", 10.0, 0.1), ("hpa", 20.0, 0.5)])
    a["fairness"]["targets"]["showar_margin_sigma"] = 3.0
    b = _report(10, 0.7, [("showar", 12.0, 0.1)])
    b["fairness"]["targets"]["showar_margin_sigma"] = 2.0
    pts = {(p["policy"], p["knob"]): p["knob_value"] for p in pareto.points([a, b])}
    assert pts == {("showar", "3σ"): 3.0, ("showar", "2σ, 10 ms"): 2.0, ("hpa", "70%"): 0.7}
    # a replica maximum (stop 35's experiment) is its own point, not pooled with the margin's
    c = _report(5, 0.7, [("showar", 14.0, 0.1)])
    c["fairness"]["targets"].update(showar_margin_sigma=3.0, showar_replica_max_cores=0.5)
    labels = {p["knob"] for p in pareto.points([a, c]) if p["policy"] == "showar"}
    assert labels == {"3σ", "3σ, ≤0.5 core"}


def test_plot_renders(tmp_path) -> None:
    a = _report(5, 0.75, [("showar", 10.0, 0.1), ("showar", 12.0, 0.12), ("hpa", 20.0, 0.5)])
    pareto.plot(str(tmp_path / "p.png"), pareto.points([a]), "t")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_other_settings_replay_the_default_settings_load(tmp_path) -> None:
    d = tmp_path / "default"
    assert bench._capacity_of(str(d)) == ()
    d.mkdir()
    (d / "report.json").write_text('{"load": {"capacity_rps": 23.7462510}, "runs": []}')
    assert bench._capacity_of(str(d)) == ("--capacity", "23.7463")


def test_summary_keeps_every_swept_workload_on_disk(tmp_path) -> None:
    """Sweeping one workload at a time (--only) into one --out keeps the others' summaries."""
    day, sec = tmp_path / "day25" / "default", tmp_path / "per-second" / "default"
    for d, ratio in ((day, 1.1), (sec, 1.3)):
        d.mkdir(parents=True)
        (d / "report.json").write_text(json.dumps({
            "comparisons": [{"policy": "showar", "baseline": "hpa", "ratio": ratio}],
            "exclusions": [{"run": 1}], "trace": {"time_warp": 60}, "runs": []}))
    (tmp_path / "per-second" / "hpa-50pct").mkdir()  # still running: no report yet
    (tmp_path / "per-second" / "showar-k3").mkdir()
    (tmp_path / "per-second" / "showar-k3" / "report.json").write_text('{"runs": []}')
    got = bench.summarize(str(tmp_path), ("day25", "per-second", "deathstarbench"))
    assert set(got) == {"day25", "per-second"}
    assert got["per-second"]["comparisons"][0]["ratio"] == 1.3
    assert got["day25"]["comparisons"][0]["ratio"] == 1.1
    assert got["per-second"]["settings"] == ["default", "showar-k3"]
    assert got["per-second"]["exclusions"] == 1


def test_bench_main_keeps_earlier_workloads_and_plots_only_its_own_settings(tmp_path) -> None:
    """A finished sweep is not run again: main() only re-reads reports. Running --only
    per-second into an --out that holds day 25 keeps day 25 in summary.json; a stale setting
    directory from another sweep is not pooled into this sweep's plot."""
    def report(policy: str, cost: float, ratio: float) -> str:
        runs = [{"policy": policy, "repeat": i, "cpu_core_seconds_allocated": cost + i,
                 "p99_seconds": 0.2, "excluded": None} for i in range(2)]
        return json.dumps({"fairness": {"targets": {"cpu_utilization": 0.75}}, "runs": runs,
                           "comparisons": [{"policy": "showar", "ratio": ratio}]})
    for w, ratio in (("day25", 1.1), ("per-second", 1.3)):
        (tmp_path / w / "default").mkdir(parents=True)
        (tmp_path / w / "default" / "report.json").write_text(report("showar", 100.0, ratio))
    (tmp_path / "per-second" / "old-default").mkdir()
    (tmp_path / "per-second" / "old-default" / "report.json").write_text(
        report("showar", 500.0, 9.9))
    rc = bench.main(["--out", str(tmp_path), "--only", "per-second", "--policies", "showar",
                     "--repeats", "2", "--showar-margins", "2", "--cpu-targets", ""])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["day25"]["comparisons"][0]["ratio"] == 1.1
    assert summary["per-second"]["comparisons"][0]["ratio"] == 1.3
    pts = json.loads((tmp_path / "per-second" / "pareto.json").read_text())["points"]
    assert [p["runs"] for p in pts] == [2]  # old-default's runs are not pooled in
    assert pts[0]["cpu_core_seconds_allocated"] == pytest.approx((100.0 * 101.0) ** 0.5)
    assert not (tmp_path / "day25" / "pareto.json").exists()  # not this invocation's
