"""End-to-end smoke of `runqscale validate`: real replicas, nginx, the probe, two policies in one
invocation on a tiny trace; report.json per the contract, plots and decision logs written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import require_root

pytestmark = pytest.mark.kernel


def test_validate_end_to_end(tmp_path) -> None:
    require_root()
    if not os.path.exists("/usr/sbin/nginx"):
        pytest.skip("no nginx (apt-get install nginx-light)")
    trace = tmp_path / "counts.txt"
    trace.write_text(" ".join(["4"] * 5 + ["12"] * 10 + ["4"] * 5) + "\n")
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "runqscale.agent.cli", "validate", "--trace", str(trace),
         "--policies", "showar,hpa", "--duration", "12s", "--capacity", "20", "--peak", "0.8",
         "--max-foreign-cpu", "64",
         "--initial-replicas", "1", "--max-replicas", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:] + p.stdout[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert [r["policy"] for r in rep["runs"]] == ["showar", "hpa"]
    # p01..p99 of the replayed trace rates -> 0.3..0.8 x 20 req/s (an affine map)
    load = rep["load"]
    assert load["capacity_rps"] == 20 and load["capacity_given"] is True
    assert rep["trace"]["scale"] == pytest.approx(
        (0.8 - 0.3) * 20 / (load["trace_p99_rps"] - load["trace_p01_rps"]))
    assert load["trace_p01_rps"] * load["scale"] + load["offset_rps"] == pytest.approx(6.0)
    assert rep["trace"]["time_warp"] == pytest.approx(20 / 12)  # the whole 20 s trace
    for r in rep["runs"]:
        assert r["requests"] > 80
        assert r["failed"] == 0
        assert r["cpu_core_seconds_used"] > 0
        assert r["cpu_core_seconds_allocated"] > r["cpu_core_seconds_used"]
        # allocated = max(request, limit): showar may set a limit above the request
        assert 0 < r["cpu_core_seconds_requested"] <= r["cpu_core_seconds_allocated"] + 1e-9
        assert 1 <= r["mean_replicas"] <= 3
        assert r["penalty"] == pytest.approx(sum(r["penalty_terms"].values()))
    assert set(rep["summary"]) == {"showar", "hpa"}
    # showar decides every 3 s; hpa every 15 s, longer than this run: no hpa log is right
    for f in ("timeline.png", "scores.png", "details.json", "recommendations-showar-0.jsonl"):
        assert (out / f).exists(), f
    # ticks run from the schedule's 0: the first reads a whole second of load, not the part
    # left after the generator started up (0.79-0.87 s of it before stop 31)
    for run in json.loads((out / "details.json").read_text())["runs"]:
        assert run["ticks"][0]["t"] == pytest.approx(1.0, abs=0.08), run["policy"]
    line = json.loads((out / "recommendations-showar-0.jsonl").read_text().splitlines()[0])
    assert line["policy"] == "showar" and line["dry_run"] is False
    assert "capacity 20.0 req/s" in p.stdout
