"""The benchmark machinery end to end, short: the WC98 day-25 trace (a small segment, no
squeeze), CPU per request measured open loop, showar vs hpa in 2 ABBA pairs of 20 s runs, host
disturbance per run, cost per run and the paired comparisons in report.json. Bad segment input
is one line."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest
from conftest import require_root
from k8s_helpers import REPO

from runqscale.data import WC98_DAY25 as TRACE
from runqscale.validation.capacity import LoadPlan
from runqscale.validation.load_shape import load_shape


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runqscale.agent.cli", "validate", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)


def test_a_squeezed_segment_is_a_one_line_usage_error(tmp_path) -> None:
    for seg, needle in (("0,24h", "above the maximum 60x"), ("9h,x", "START[,DURATION]"),
                        ("30h", "outside the trace")):
        r = _cli("--trace", str(TRACE), "--segment", seg, "--duration", "150s",
                 "--out", str(tmp_path / "o"), timeout=60)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "--segment" in lines[0], r.stderr


@pytest.mark.kernel
@pytest.mark.slow
def test_benchmark_machinery_two_abba_pairs(tmp_path) -> None:
    require_root()
    if not os.path.exists("/usr/sbin/nginx"):
        pytest.skip("no nginx (apt-get install nginx-light)")
    out = tmp_path / "bench"
    # 20 s at <= 60x: the busiest 20 trace minutes; the exclusion rule is the default's, but
    # a shared CI machine is busy, so the threshold is lifted to check the comparisons' shape
    r = _cli("--trace", str(TRACE), "--policies", "showar,hpa", "--duration", "20s",
             "--repeats", "2", "--max-foreign-cpu", "64", "--max-steal", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    rep = json.loads((out / "report.json").read_text())
    tr = rep["trace"]
    assert set(tr) >= {"file", "segment", "scale", "time_warp"}
    assert tr["time_warp"] == pytest.approx(60.0)
    assert tr["segment"]["trace_seconds"] == pytest.approx(1200.0)
    # ABBA: showar, hpa, then hpa, showar
    assert [(x["policy"], x["repeat"]) for x in rep["runs"]] == [
        ("showar", 0), ("hpa", 0), ("hpa", 1), ("showar", 1)]
    load = rep["load"]
    assert load["cpu_seconds_per_request"] > 0 and load["capacity_given"] is False
    assert 0 <= load["idle_cores"] < load["allocated_cores"]
    assert load["capacity_rps"] == pytest.approx(
        (load["allocated_cores"] - load["idle_cores"]) / load["cpu_seconds_per_request"])
    # idle CPU separated: a light rate alone would have charged it to the requests
    assert load["capacity_rps"] >= 0.9 * load["single_rate_capacity_rps"]
    assert load["loaded_probe_rate_rps"] > load["probe_rate_rps"]
    # the light/loaded pair measured three times in turn, the median capacity's kept
    reads = load["capacity_repeats_rps"]
    assert len(reads) == 3 and load["capacity_rps"] == sorted(reads)[1]
    assert r.stdout.count("  measurement ") == 3 and "the median of 3 measurements" in r.stdout
    assert load["peak_fraction"] == 1.4 and load["trough_fraction"] == 0.3
    # the replayed load's shape: the per-second rates of details.json, trend and noise
    details = json.loads((out / "details.json").read_text())
    shape = load["shape"]
    as_is = LoadPlan(load["capacity_rps"], 1.4, 0.3, 1.0, 0.0, 0.0, 1.0)  # rates taken as sent
    replayed = load_shape(np.asarray(details["rates_per_second"]), as_is)
    for key in ("noise_share", "noise_lag1_autocorrelation", "trend_range_capacity",
                "median_step_capacity"):
        assert shape[key] == pytest.approx(replayed[key]), key
    assert 0 <= shape["noise_share"] <= 1 and shape["swing_gain"] > 0
    assert r.stdout.count("load shape: ") == 1
    # how heavy the replay was: the median CPU per request served over the runs, against the
    # full-load CPU per request the measured capacity stands for (a plan that held: about 1.1;
    # the bounds only catch a capacity off by 2x)
    realised = load["realised"]
    served = [x["cpu_core_seconds_used"] / (x["requests"] - x["failed"]) for x in rep["runs"]]
    assert realised["kept_runs"] == 4
    assert realised["used_cpu_seconds_per_request"] == pytest.approx(statistics.median(served))
    assert realised["planned_cpu_seconds_per_request"] == pytest.approx(
        load["allocated_cores"] / load["capacity_rps"])
    assert realised["ratio"] == pytest.approx(realised["used_cpu_seconds_per_request"]
                                              / realised["planned_cpu_seconds_per_request"])
    assert 0.5 < realised["ratio"] < 2.0, realised
    assert r.stdout.count("load: the runs used a median") == 1
    assert rep["fairness"]["targets"]["runq_p95_seconds"] == 0.005  # the library's default
    for run in rep["runs"]:
        assert run["cpu_core_seconds_allocated"] >= run["cpu_core_seconds_requested"] > 0
        assert run["cpu_core_seconds_used"] > 0
        h = run["host"]
        assert h["foreign_cpu_cores"] >= 0 and 0 <= h["steal_ratio"] <= 1
        assert run["excluded"] is None
    assert rep["exclusions"] == []
    comps = {(c["baseline"], c["metric"]): c for c in rep["comparisons"]}
    for m in ("cpu_core_seconds_allocated", "p99_seconds", "slo_violation_ratio"):
        for b in ("hpa", "best"):
            c = comps[(b, m)]
            assert c["policy"] == "showar" and c["pairs"] == 2
            assert c["ci_low"] <= c["ratio"] <= c["ci_high"]
            assert math.isfinite(c["ci_high"])
        assert comps[("best", m)]["best_of"] == "hpa"
    runs = {(x["policy"], x["repeat"]): x for x in rep["runs"]}
    a = [runs[("showar", k)]["cpu_core_seconds_allocated"]
         / runs[("hpa", k)]["cpu_core_seconds_allocated"] for k in (0, 1)]
    assert comps[("hpa", "cpu_core_seconds_allocated")]["ratio"] == \
        pytest.approx(math.sqrt(a[0] * a[1]))
    assert "paired ratios" in r.stdout and "95 % CI" in r.stdout
