"""The deployed scaler does what the CLI does (issue 14): `scaler k8s --apply --log` against the
real API server writes the design.md recommendations log with the same fields as `runqscale
scaler --log`, emits SHOWAR's affinity and spread recommendations when the signals call for
them, and serves `runqscale_scaler_*` on its /metrics, which a real Prometheus scrapes and the
Grafana dashboard's scaler panels query."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from k8s_helpers import REPO, ScalerProcess, deployment, ensure_namespace, free_port, wait_for
from prometheus_helpers import PrometheusServer, have_prometheus

from runqscale.scaler.k8s.client import path

sys.path.insert(0, str(REPO / "deploy" / "grafana"))
import render_panels as rp  # noqa: E402

pytestmark = [pytest.mark.kubernetes, pytest.mark.prometheus]

NS = "logmetrics"


class CorrelatedSignals:
    """Signals for `web` and `api`: CPU usage that rises and falls together (Pearson r ~ 1:
    a spread pair), `web` starved (p95 4x the 5 ms target, not throttled), and per-pod samples
    that put web's pods on a hot node and api's on a cool one (a spread move)."""

    def __init__(self, p: Path) -> None:
        self.path = p
        self._stop = threading.Event()
        self.write()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def write(self) -> None:
        now = time.time()
        lines = []
        for k in range(40):
            ts = now - (39 - k)
            load = 1.0 + 0.5 * math.sin(ts / 4.0)
            for wl, p95, node in (("web", 0.02, "hot"), ("api", 0.001, "cool")):
                pods = [{"name": f"{wl}-7d4b9c8f6d-{i}xk2p", "node": node,
                         "runq_p95_seconds": p95, "cpu_usage_cores": 0.3 * load}
                        for i in range(2)] if k == 39 else []
                lines.append(json.dumps({
                    "ts": ts, "workload": f"{NS}/{wl}", "replicas": 2, "ready_replicas": 2,
                    "cpu_usage_cores": 0.6 * load, "cpu_request_cores": 0.5,
                    "cpu_limit_cores": 1.0, "runq_p95_seconds": p95, "throttled_ratio": 0.0,
                    "pods": pods}))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.write()

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)


def _keys(obj: dict) -> dict:
    """The field names of a log line, nested objects' too (values differ between runs)."""
    return {k: _keys(v) if isinstance(v, dict) and k != "signals" else None
            for k, v in obj.items()}


def test_scaler_k8s_log_extras_and_metrics(k8s_deployed, tmp_path):
    if not have_prometheus():
        pytest.skip("no prometheus binary (make deps installs it)")
    env = k8s_deployed
    cp = env.cp
    ensure_namespace(cp, NS)
    for name in ("web", "api"):
        cp.admin.create(path("Deployment", NS), deployment(
            name, replicas=2, cpu=("500m", "1"),
            annotations={"runqscale.io/policy": "showar", "runqscale.io/max-replicas": "6"}))
    sig = CorrelatedSignals(tmp_path / "signals.jsonl")
    log_path = tmp_path / "recs.jsonl"
    port = free_port()
    args = ["--signals", str(sig.path), "--apply", "--server", cp.server,
            "--token-file", str(env.token_file), "--ca-file", str(cp.pki / "ca.crt"),
            "--namespace", NS, "--lease-namespace", "runqscale-system",
            "--lease-name", "logmetrics", "--identity", "lm-0", "--lease-duration=4",
            "--renew-deadline=3", "--retry-period=0.5", "--tick=0.5", "--max-signal-age=5",
            "--log", str(log_path), "--metrics-listen", f"127.0.0.1:{port}"]
    # Prometheus first: the decisions panel shows increase(), which needs the counters' growth
    prom = PrometheusServer([f"127.0.0.1:{port}"], job="runqscale-scaler")
    scaler = ScalerProcess(args, tmp_path / "scaler.log")
    started = time.time()
    try:
        def logged() -> list[dict]:
            if not log_path.exists():
                return []
            return [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]

        def extras() -> set[str]:  # the log is appended line by line: wait for every kind
            return {r["reason"].split(" ")[0] for r in logged() if r["action"] == "affinity"}

        def seen() -> str:  # what the log held, for the failure message
            return ", ".join(sorted({f"{r['action']}{'(applied)' if r.get('applied') else ''}"
                                     for r in logged()})) or "nothing"

        try:
            # ~15 s on an idle machine; a loaded CI machine once needed more than 60
            wait_for(lambda: any(r["action"] == "scale_out" and r["applied"] for r in logged())
                     and {"spread", "spread:"} <= extras(), 120,
                     what="an applied scale-out, an affinity pair and a spread move in the log")
        except TimeoutError as e:
            events = [e.get("event") for _, e in scaler.lines[-8:]]
            raise AssertionError(f"{e}; the log held: {seen()}; leader: {scaler.is_leader()}; "
                                 f"last scaler events: {events}") from e
        recs = logged()
        out = next(r for r in recs if r["action"] == "scale_out")
        assert out["workload"] == {"namespace": NS, "kind": "Deployment", "name": "web"}
        assert out["dry_run"] is False and out["error"] is None
        # applied for real (a later scale-out after the cool-down may have added more)
        assert cp.admin.get(path("Deployment", NS, "web"))["spec"]["replicas"] \
            >= out["recommended"]["replicas"] > 2
        reasons = [r["reason"] for r in recs if r["action"] == "affinity"]
        pair = f"spread {NS}/api and {NS}/web: CPU usage Pearson"
        assert any(x.startswith(pair) for x in reasons), \
            reasons  # the correlated pair
        assert any(x.startswith("spread: move pod web-") for x in reasons), reasons  # hot node
        # the same fields as the CLI's log for the same signals
        cli_log = tmp_path / "cli.jsonl"
        subprocess.run([str(REPO / ".venv" / "bin" / "runqscale"), "scaler", "--signals",
                        str(sig.path), "--once", "--log", str(cli_log)], check=True,
                       capture_output=True, cwd=REPO)
        cli = [json.loads(x) for x in cli_log.read_text().splitlines()]
        by_action = {r["action"]: r for r in cli}
        for r in recs:
            twin = by_action.get(r["action"]) or cli[0]
            assert _keys(r) == _keys(twin), (r, twin)
            assert set(r["signals"]) <= set(twin["signals"]) | {"pearson_r",
                                                                 "node_runq_p95_seconds",
                                                                 "dest_node_runq_p95_seconds",
                                                                 "startup_delay_seconds"}

        # /metrics scraped by a real Prometheus; the dashboard's scaler panels return data
        wait_for(lambda: prom.query("runqscale_scaler_leader") and prom.value(
            "max(runqscale_scaler_leader)") == 1.0, 30, what="the leader gauge scraped")
        time.sleep(3)  # a few scrapes for the increase() of the decisions panel
        scaler_panels = [q for q in rp.dashboard_queries(rp.load_dashboard())
                         if "runqscale_scaler_" in q.expr]
        assert len(scaler_panels) >= 3
        # the whole test in one rate window: the decisions panel shows increase() of actions,
        # and after the first scale-out and resize the later decisions are mostly "none"
        values = dict(rp.DEFAULT_VARS, namespace=NS, __rate_interval="5m")
        # over the test's time range, as Grafana evaluates panels and annotations: the
        # annotation counts actions within [1m] of each step, which "now" may be past
        for q in scaler_panels:
            expr = rp.promql(q, values)
            result = rp.query_range(prom.url, expr, started, time.time(), 1.0)
            assert result, f"scaler panel {q.title!r} has no data: {expr}"
        web = prom.value(f'runqscale_scaler_recommended_replicas{{namespace="{NS}",'
                         'workload="web"}')
        assert web is not None and web > 2
        assert prom.value('sum(runqscale_scaler_decisions_total{action="affinity"})') >= 1
        assert prom.value("sum(runqscale_scaler_step_duration_seconds_count)") >= 1
    finally:
        sig.stop()
        scaler.stop()
        prom.stop()
        cp.kubectl("delete", "deployment", "web", "api", "-n", NS, "--ignore-not-found")
