"""`runqscale validate summary`: the one-screen table of a report.json (design.md's contract),
read back from a file as `make demo` does, and one-line errors for files that are not reports."""

from __future__ import annotations

import json
import subprocess
import sys

from runqscale.validation.report import build_report


def _run(policy: str, repeat: int, p95: float, penalty: float) -> dict:
    return {"policy": policy, "repeat": repeat, "requests": 1000, "failed": 3,
            "p50_seconds": 0.05, "p95_seconds": p95, "p99_seconds": 2 * p95,
            "slo_violation_ratio": 0.02, "cpu_core_seconds_requested": 100.0,
            "cpu_core_seconds_allocated": 120.0,
            "cpu_core_seconds_used": 80.0, "mean_replicas": 2.5, "decisions": 7,
            "penalty": penalty, "penalty_terms": {"latency": 0.1, "failures": 0.0,
                                                  "replicas": 2.5}}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runqscale.agent.cli", "validate", "summary",
                           *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})


def test_summary_prints_each_policy_and_the_paired_ratios(tmp_path):
    from runqscale.validation.report import TraceInfo
    trace = TraceInfo(file="data/worldcup98/wc_day25_per_minute.csv",
                      segment={"start": "1998-05-20 09:00", "end": "1998-05-20 15:00",
                               "trace_seconds": 21600}, scale=0.01, time_warp=60.0)
    report = build_report(trace, 0.5, [_run("showar", 0, 0.120, 3.1), _run("showar", 1, 0.140, 3.3),
                                       _run("hpa", 0, 0.410, 4.0), _run("hpa", 1, 0.390, 4.2)])
    report["comparisons"] = [{"policy": "showar", "baseline": "hpa", "metric": "p95_seconds",
                              "ratio": 0.31, "ci_low": 0.27, "ci_high": 0.36, "pairs": 2}]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    r = _cli(str(path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) <= 25  # one screen
    at = next(i for i, ln in enumerate(lines) if ln.startswith("showar "))
    # the mean over the two repeats (p95 in ms, penalty), then their range on a row below
    assert "130.0" in lines[at] and "3.20" in lines[at]
    assert lines[at + 1].split() == ["min–max", "120.0–140.0", "240.0–280.0", "3.10–3.30"]
    hpa = next(ln for ln in lines if ln.startswith("hpa "))
    assert hpa.split()[1:] == ["400.0", "800.0", "2.0", "3", "120", "80", "2.50", "7", "4.10"]
    ratio = next(ln for ln in lines if "p95_seconds" in ln)
    assert ratio.split() == ["showar", "hpa", "p95_seconds", "0.31", "0.27–0.36", "2"]
    assert ("wc_day25_per_minute.csv 1998-05-20 09:00 – 1998-05-20 15:00, warp 60x, scale 0.01, "
            "SLO 500 ms") in lines
    assert not any(ln.startswith("load:") for ln in lines)  # no realised load: no line


def test_summary_prints_how_heavy_the_replay_was_against_its_capacity(tmp_path):
    from runqscale.validation.report import TraceInfo
    trace = TraceInfo(file="t.csv", segment={"start": "a", "end": "b", "trace_seconds": 60},
                      scale=0.01, time_warp=60.0)
    runs = [_run("showar", 0, 0.1, 1.0), _run("hpa", 0, 0.2, 1.0)]
    report = build_report(trace, 0.5, runs, extra={"load": {
        "capacity_given": True, "realised": {"used_cpu_seconds_per_request": 0.08,
                                             "planned_cpu_seconds_per_request": 0.05,
                                             "ratio": 1.6, "kept_runs": 2}}})
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    r = _cli(str(path))
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # the console wraps the line at its width
    assert text.count("load: the runs used") == 1
    assert ("load: the runs used a median 80.0 ms of CPU per request served, 1.60x the 50.0 ms "
            "the capacity (given with --capacity) stands for at full load") in text


def test_summary_of_a_file_that_is_not_a_report_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "x.json"
    for content, needle in (("{", "not JSON"), ('{"runs": []}', "no `summary` object")):
        bad.write_text(content)
        r = _cli(str(bad))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    r = _cli(str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "no such report" in r.stderr


def test_summary_shows_what_excluded_runs_measured_and_why_they_were_left_out(tmp_path):
    # a demo on a machine with steal: every run of a policy excluded must not leave a row of
    # dashes with no reason; the excluded runs' figures are shown apart and never averaged in
    from runqscale.validation.report import TraceInfo
    trace = TraceInfo(file="t.csv", segment={"start": "a", "end": "b", "trace_seconds": 60},
                      scale=0.01, time_warp=60.0)
    hpa = _run("hpa", 0, 0.2, 1.0)
    hpa["excluded"] = "steal 7.1% > 5%"
    runs = [_run("showar", 0, 0.1, 1.0), _run("showar", 1, 0.3, 1.0), hpa]
    runs[1]["excluded"] = "foreign CPU 0.61 > 0.5 cores"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(build_report(trace, 0.5, runs)))
    r = _cli(str(path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    showar = lines.index(next(ln for ln in lines if ln.startswith("showar ")))
    assert lines[showar].split()[1:3] == ["100.0", "200.0"]  # the kept run only
    assert lines[showar + 1].split()[:4] == ["excluded", "(1)", "300.0", "600.0"]
    at = lines.index(next(ln for ln in lines if ln.startswith("hpa ")))
    assert lines[at].split()[1:] == ["-"] * 9  # nothing kept
    assert lines[at + 1].split()[:4] == ["excluded", "(1)", "200.0", "400.0"]
    text = " ".join(r.stdout.split())
    assert ("excluded by the disturbance rule fixed before the runs (measured, shown dim, not "
            "in the means or ratios): showar #2 foreign CPU 0.61 > 0.5 cores; hpa #1 steal "
            "7.1% > 5%") in text
