"""The Prometheus rules in deploy/prometheus/, checked and unit-tested by the real promtool.

`promtool check rules` (syntax, PromQL, templates) and `promtool test rules` on every
deploy/prometheus/tests/*.yaml. Missing promtool skips locally and fails in CI (conftest).
Plus the house rules promtool cannot check: every alert carries a runbook, a summary and a
severity, and every alert is expected to fire in at least one unit test.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest
import yaml

from runqscale.exporter import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROM_DIR = os.path.join(ROOT, "deploy", "prometheus")
RULE_FILES = sorted(glob.glob(os.path.join(PROM_DIR, "*rules*.yaml")))
UNIT_TESTS = sorted(glob.glob(os.path.join(PROM_DIR, "tests", "*.yaml")))

pytestmark = pytest.mark.prometheus


def _promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool")
                                         else None)
    if path is None:
        pytest.skip("promtool not found (Debian package `prometheus`)")
    return path


def _alerts() -> dict[str, dict]:
    out = {}
    for f in RULE_FILES:
        with open(f) as fh:
            for g in yaml.safe_load(fh)["groups"]:
                for r in g["rules"]:
                    if "alert" in r:
                        out[r["alert"]] = r
    return out


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES, "no rule files in deploy/prometheus"
    assert UNIT_TESTS, "no promtool unit tests in deploy/prometheus/tests"


@pytest.mark.parametrize("path", RULE_FILES + UNIT_TESTS, ids=os.path.basename)
def test_every_metric_name_is_declared(path: str) -> None:
    """Rules (and their unit tests' input series) name only metrics exporter/metrics.py declares:
    a renamed metric fails here, not silently in production as an empty alert."""
    with open(path) as f:
        text = f.read()
    assert "runqscale_runqueue_latency_seconds_bucket" in text or "tests" in path
    assert not metrics.undeclared(text), f"undeclared in {path}: {metrics.undeclared(text)}"


def test_promtool_check_rules() -> None:
    r = subprocess.run([_promtool(), "check", "rules", *RULE_FILES],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_test_rules() -> None:
    r = subprocess.run([_promtool(), "test", "rules", *UNIT_TESTS],
                       capture_output=True, text=True, timeout=120, cwd=PROM_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILED" not in r.stdout


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_alert_has_runbook_summary_severity(name: str) -> None:
    rule = _alerts()[name]
    ann = rule.get("annotations", {})
    assert len(ann.get("runbook", "")) > 80, f"{name}: runbook text missing or too short"
    assert ann.get("summary"), f"{name}: no summary"
    assert rule.get("labels", {}).get("severity") in ("warning", "critical"), name


def test_every_alert_fires_in_a_unit_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for f in UNIT_TESTS:
        with open(f) as fh:
            for case in yaml.safe_load(fh)["tests"]:
                for t in case.get("alert_rule_test", []):
                    (fired if t.get("exp_alerts") else quiet).add(t["alertname"])
    alerts = set(_alerts())
    assert alerts - fired == set(), f"alerts never expected to fire: {sorted(alerts - fired)}"
    assert alerts - quiet == set(), f"alerts without a stays-quiet case: {sorted(alerts - quiet)}"


def test_expected_recording_rules_present() -> None:
    names = set()
    for f in RULE_FILES:
        with open(f) as fh:
            for g in yaml.safe_load(fh)["groups"]:
                names |= {r["record"] for r in g["rules"] if "record" in r}
    for want in ("workload:runqscale_runqueue_latency_seconds:p95_30s",
                 "workload:runqscale_runqueue_latency_seconds:p95_5m",
                 "workload:runqscale_runqueue_wait_by_holder_seconds:other_cgroup_ratio_rate5m",
                 "runqscale:runqueue_latency_p95_target:seconds"):
        assert want in names
