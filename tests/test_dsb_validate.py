"""`runqscale validate --app deathstarbench` end to end, short: the real emulated social network,
a trace segment, showar and hpa each scaling the 11 services, then the affinity experiment; the
report keeps design.md's contract and the details hold per-service series. Bad input is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from k8s_helpers import REPO

REED98 = REPO / "data/deathstarbench/socfb-Reed98.edges"
TRACE = REPO / "data/worldcup98/wc_day25_per_minute.csv"
CONTRACT_RUN = {"policy", "repeat", "requests", "failed", "p50_seconds", "p95_seconds",
                "p99_seconds", "slo_violation_ratio", "cpu_core_seconds_requested",
                "cpu_core_seconds_allocated", "cpu_core_seconds_used", "mean_replicas",
                "decisions", "penalty", "penalty_terms"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runqscale.agent.cli", "validate", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=900)


def test_bad_graph_and_app_are_one_line_errors(tmp_path):
    bad = tmp_path / "g.edges"
    bad.write_text("0 1\n1 x\n")
    for args, needle in (
        (["--graph", str(bad)], "g.edges:2"),
        (["--graph", str(tmp_path / "none.edges")], "--graph"),
        (["--app", "nope"], "--app"),
    ):
        r = _cli("--app", "deathstarbench", "--trace", str(TRACE), *args) if args[0] != "--app" \
            else _cli(*args, "--trace", str(TRACE))
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], r.stderr


@pytest.mark.kernel
@pytest.mark.slow
def test_validate_deathstarbench_showar_hpa_report(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs and create cgroups")
    out = tmp_path / "dsb"
    r = _cli("--app", "deathstarbench", "--trace", str(TRACE), "--policies", "showar,hpa",
             "--duration", "30s", "--affinity-seconds", "8s", "--segment", "9h,30m",
             "--max-foreign-cpu", "64", "--capacity-repeats", "2",
             "--out", str(out), "--backend", "core", "--hierarchy", "v1")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert [x["policy"] for x in rep["runs"]] == ["showar", "hpa"]
    # the capacity measured with two open-loop rates, twice in turn here; the lower of the two
    # (the lower middle) kept, whole: the bottleneck's own idle CPU and CPU per request
    load = rep["load"]
    reads = load["capacity_repeats_rps"]
    assert len(reads) == 2 and load["capacity_rps"] == min(reads)
    key = load["bottleneck"]
    assert load["capacity_rps"] == pytest.approx(
        (0.1 - load["idle_cores"][key]) / load["cpu_seconds_per_request"][key])
    # what every policy shared, in the runlang report's shape (validation/compare.fairness)
    fair = rep["fairness"]
    assert len(fair["start"]) == 11 and fair["bounds"]["max_cpu_per_replica"] > 0
    assert fair["targets"]["runq_p95_seconds"] == 0.005
    assert fair["targets"]["showar_replica_max_cores"] is None  # off unless asked for
    for run in rep["runs"]:
        assert CONTRACT_RUN <= set(run) and {"host", "excluded", "order"} <= set(run)
        assert run["requests"] > 1000 and run["failed"] < 0.2 * run["requests"]
        assert run["mean_replicas"] >= 11  # summed over the 11 logic services, min 1 each
        assert run["cpu_core_seconds_used"] > 0
    det = json.loads((out / "details.json").read_text())
    assert det["app"] == "deathstarbench"
    for d in det["runs"]:
        assert len(d["services"]) == 11
        s = d["services"]["home-timeline-service"]
        assert len(s["t"]) == len(s["replicas"]) == len(s["used_cores"]) >= 25
        assert s["t"][0] == pytest.approx(1.0, abs=0.08)  # ticks run from the schedule's 0
        assert set(d["by_request_type"]) == {"read-home-timeline", "read-user-timeline",
                                             "compose-post"}
        assert d["by_request_type"]["read-home-timeline"]["ok"] > 0
    aff = det["affinity"]
    assert aff["source_run"] == "showar"
    assert set(aff["placements"]) == {"default", "affinity"}
    assert all(p["kind"] in ("spread", "co-locate") and abs(p["r"]) > 0.8 for p in aff["pairs"])
    logged = [json.loads(x) for x in (out / "recommendations-affinity.jsonl").read_text()
              .splitlines()] if aff["pairs"] else []
    assert len(logged) == len(aff["pairs"])  # one recommendation per pair, in the log contract
    assert all(r["action"] == "affinity" and r["recommended"] == r["current"] for r in logged)
    if aff["placements"]["default"] != aff["placements"]["affinity"]:
        assert len(aff["rounds"]) == 4 and "p99_change" in aff
    for png in ("timeline.png", "services.png", "scores.png"):
        assert (out / png).stat().st_size > 10_000
