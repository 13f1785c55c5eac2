"""`runqscale status` / `kubectl runqscale status`: the opted-in workloads from the real API server
beside the last decision in the recommendations log (now vs recommended, signal, reason, age);
the row logic on its own; bad input is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from k8s_helpers import BIN_DIR, deployment, ensure_namespace

from runqscale.scaler import log
from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.k8s.client import path
from runqscale.scaler.k8s.events import NORMAL, EventRecorder, ObjectRef
from runqscale.scaler.model import CurrentState, Recommendation, WorkloadRef
from runqscale.scaler.status import age_text, rows, signal_text

NS = "status"
VENV_BIN = Path(sys.executable).parent


def rec(ns: str, name: str, ts: float, replicas: int, action: str = "scale_out",
        reason: str = "runq p95 12.0 ms above the 5 ms target: 1 -> 3") -> Recommendation:
    return Recommendation(
        ts=ts, workload=WorkloadRef(ns, name), policy="showar",
        signals={"runq_p95_seconds": 0.012, "cpu_usage_cores": 0.31, "throttled_ratio": 0.25},
        current=CurrentState(1, 0.1, 0.2), recommended=CurrentState(replicas, 0.1, 0.2),
        action=action, reason=reason, dry_run=True)  # type: ignore[arg-type]


def obj(ns: str, name: str, policy: str | None, replicas: int = 1) -> tuple[str, dict]:
    d = deployment(name, replicas, annotations={ann.POLICY: policy} if policy else {})
    d["metadata"]["namespace"] = ns
    d["status"] = {"readyReplicas": replicas}
    return "Deployment", d


def test_rows_pair_each_opted_in_workload_with_its_newest_decision():
    recs = [rec("a", "web", 100.0, 2), rec("a", "web", 200.0, 3), rec("a", "other", 300.0, 5),
            rec("b", "web", 150.0, 4)]
    rs = rows([obj("a", "web", "showar"), obj("a", "plain", None), obj("b", "web", "hpa"),
               obj("c", "new", "static")], recs)
    assert [(r.namespace, r.name) for r in rs] == [("a", "web"), ("b", "web"), ("c", "new")]
    assert rs[0].last.ts == 200.0 and rs[0].last.recommended.replicas == 3
    assert rs[0].cpu_request_cores == pytest.approx(0.1)
    assert rs[1].last.recommended.replicas == 4 and rs[2].last is None
    j = rs[0].to_json(now=260.0)
    assert j["last_decision"]["age_seconds"] == 60.0 and j["current"]["replicas"] == 1
    assert j["last_decision"]["signals"]["runq_p95_seconds"] == 0.012


def test_texts():
    assert signal_text({"runq_p95_seconds": 0.0123, "cpu_usage_cores": 0.5,
                        "throttled_ratio": 0.0}) == "p95 12.3ms, cpu 0.50"
    assert [age_text(s) for s in (None, 5, 125, 7300, 200000)] == ["-", "5s", "2m", "2h", "2d"]


def _status(*args: str, env: dict | None = None, cmd: list[str] | None = None
            ) -> subprocess.CompletedProcess:
    return subprocess.run([*(cmd or [sys.executable, "-m", "runqscale.agent.cli", "status"]),
                           *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_bad_log_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "recs.jsonl"
    bad.write_text('{"not": "a recommendation"}\n{}\n')
    kc = tmp_path / "kc"
    kc.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [],
                              "contexts": [], "users": []}))
    r = _status("--kubeconfig", str(kc), "--log", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--log" in r.stderr and "recs.jsonl:1" in r.stderr


@pytest.mark.kubernetes
def test_status_against_the_real_api_server(k8s_control_plane, tmp_path):
    cp = k8s_control_plane
    ensure_namespace(cp, NS)
    cp.admin.create(path("Deployment", NS), deployment("web", 2, annotations={
        ann.POLICY: "showar"}))
    cp.admin.create(path("Deployment", NS), deployment("batch", annotations={
        ann.POLICY: "hpa"}))
    cp.admin.create(path("Deployment", NS), deployment("ignored"))
    recs = tmp_path / "recs.jsonl"
    log.append(recs, [rec(NS, "web", time.time() - 400, 2, "none", "steady"),
                      rec(NS, "web", time.time() - 90, 3)])
    kc = str(cp.admin_kubeconfig)

    r = _status("--kubeconfig", kc, "-n", NS, "--log", str(recs), "--json")
    assert r.returncode == 0, r.stderr
    ws = {w["workload"]["name"]: w for w in json.loads(r.stdout)["workloads"]}
    assert set(ws) == {"web", "batch"}  # the one without the annotation is not listed
    web = ws["web"]
    assert web["policy"] == "showar" and web["current"]["replicas"] == 2
    assert 0 <= web["current"]["ready_replicas"] <= 2  # kwok's pace on a busy control plane
    assert web["current"]["cpu_request_cores"] == pytest.approx(0.1)
    assert web["current"]["cpu_limit_cores"] == pytest.approx(0.2)
    last = web["last_decision"]
    assert last["action"] == "scale_out" and last["recommended"]["replicas"] == 3
    assert 85 <= last["age_seconds"] <= 150 and "1 -> 3" in last["reason"]
    assert ws["batch"]["last_decision"] is None and ws["batch"]["last_event"] is None

    # no log at hand: the in-cluster scaler's Events on the workload say what it decided
    batch = cp.admin.get(path("Deployment", NS, "batch"))
    EventRecorder(cp.admin, instance="scaler-0").record(
        ObjectRef.of(batch, "Deployment"), NORMAL, "ScaleOutDryRun",
        "hpa: cpu 0.40 of 0.10 requested (400 % > 75 %): 1x -> 4x (dry-run)")
    r = _status("--kubeconfig", kc, "-n", NS, "--json")
    assert r.returncode == 0, r.stderr
    ws = {w["workload"]["name"]: w for w in json.loads(r.stdout)["workloads"]}
    ev = ws["batch"]["last_event"]
    assert ev["reason"] == "ScaleOutDryRun" and "1x -> 4x" in ev["message"]
    assert 0 <= ev["age_seconds"] < 60 and ws["web"]["last_event"] is None
    r = _status("--kubeconfig", kc, "-n", NS)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"{NS}/batch"))
    assert "ScaleOutDryRun (event)" in line and "1x -> 4x" in line

    # people: one line per workload, now -> recommended, signal, reason, age
    r = _status("--kubeconfig", kc, "-n", NS, "--log", str(recs))
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"{NS}/web"))
    assert "2→3" in line and "p95 12.0ms" in line and "scale_out" in line
    assert "1m" in line or "2m" in line
    assert "100m/200m" in line and "1 -> 3" in line

    # the same through kubectl's plugin mechanism (kubectl-runqscale on PATH)
    if not os.access(BIN_DIR / "kubectl", os.X_OK):
        pytest.fail(f"no kubectl in {BIN_DIR}: run make k8s-build")
    r = _status("status", "-n", NS, "--log", str(recs), "--json",
                cmd=[str(BIN_DIR / "kubectl"), "runqscale"],
                env={"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "KUBECONFIG": kc})
    assert r.returncode == 0, r.stderr
    assert {w["workload"]["name"] for w in json.loads(r.stdout)["workloads"]} == {"web", "batch"}
