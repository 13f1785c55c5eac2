"""`runqscale scaler --prometheus URL` against a real Prometheus (Debian's /usr/bin/prometheus).

A tiny HTTP server in the test serves the metric names of design.md (labels namespace, pod,
container, node) the way the agent and kube-state-metrics would; Prometheus scrapes it every
second; the scaler's queries (runqscale.scaler.promql) must turn that into per-workload signals and
decisions. Without the binary the tests skip, except with CI=true, where they fail.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from runqscale.agent.cli import main as root
from runqscale.ports import free_port
from runqscale.scaler import promql
from runqscale.scaler.model import HOLDER_FIELDS
from runqscale.scaler.policies.attribution import attribute_window
from runqscale.scaler.prometheus_source import PrometheusSource
from runqscale.scaler.signals import windows_from_samples

PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
T0 = time.time()
RATE_WINDOW = 10  # seconds: counters' rate() window in these tests (1 s scrapes)

# workload -> (pods, per-pod p95 gauge, per-pod CPU cores, throttled share of periods)
WORKLOADS = {
    ("shop", "web"): (["web-7d4b9c8f6d-x2k5p", "web-7d4b9c8f6d-q9z8w"], [0.018, 0.022], 0.45, 0.0),
    ("shop", "db"): (["db-0"], [0.001], 0.2, 0.0),
    ("shop", "batch"): (["batch-6c5f7b9d8c-hj2kt"], [float("nan")], 0.1, 0.0),
}
# workload -> per-pod run-queue wait (s/s) by what held the CPU; batch's agent cannot split
HELD = {
    ("shop", "web"): {"same_cgroup": 0.05, "other_cgroup": 0.3, "kernel": 0.01, "idle": 0.0},
    ("shop", "db"): {"same_cgroup": 0.4, "other_cgroup": 0.02, "kernel": 0.0, "idle": 0.03},
}


def _exposition() -> str:
    elapsed = time.time() - T0
    out = []
    for (ns, wl), (pods, p95s, cpu, thr) in WORKLOADS.items():
        for pod, p95 in zip(pods, p95s, strict=True):
            lbl = f'namespace="{ns}",pod="{pod}",container="app",node="n1"'
            out.append(f"runqscale_runqueue_latency_p95_seconds{{{lbl}}} {p95}")
            out.append(f"runqscale_cpu_usage_seconds_total{{{lbl}}} {cpu * elapsed:.6f}")
            out.append(f"runqscale_cpu_periods_total{{{lbl}}} {10 * elapsed:.3f}")
            out.append(f"runqscale_cpu_throttled_periods_total{{{lbl}}} {10 * thr * elapsed:.3f}")
            for holder, rate in HELD.get((ns, wl), {}).items():
                out.append(f'runqscale_runqueue_wait_by_holder_seconds_total{{{lbl},'
                           f'holder="{holder}"}} {rate * elapsed:.6f}')
            out.append(
                f'kube_pod_container_resource_requests{{namespace="{ns}",pod="{pod}",'
                f'container="app",resource="cpu",unit="core"}} 0.5'
            )
            out.append(
                f'kube_pod_container_resource_limits{{namespace="{ns}",pod="{pod}",'
                f'container="app",resource="cpu",unit="core"}} 1'
            )
        out.append(
            f'kube_deployment_spec_replicas{{namespace="{ns}",deployment="{wl}"}} {len(pods)}'
        )
        out.append(
            f'kube_deployment_status_replicas_ready{{namespace="{ns}",deployment="{wl}"}} '
            f"{len(pods)}"
        )
    return "\n".join(out) + "\n"


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = _exposition().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    if not (os.path.exists(PROMETHEUS) and os.access(PROMETHEUS, os.X_OK)):
        pytest.skip(f"{PROMETHEUS} not installed (apt-get install prometheus)")  # fails in CI
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="runqscale-scaler-prom-")
    port = free_port()
    cfg = os.path.join(tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: fake\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{srv.server_address[1]}']\n"
        )
    logf = open(os.path.join(tmp, "log"), "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp}/data",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_data(url, proc, tmp)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_data(url: str, proc: subprocess.Popen, tmp: str, timeout: float = 30.0) -> None:
    """Until rate() over the CPU counter has an answer, then one rate window more (rate() reads
    low while the series is younger than its window)."""
    q = urllib.parse.urlencode({"query": "rate(runqscale_cpu_usage_seconds_total[3s])"})
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {open(os.path.join(tmp, 'log')).read()}")
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=2) as r:
                if json.load(r)["data"]["result"]:
                    time.sleep(RATE_WINDOW + 1.0)
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError("prometheus has no data after 30 s")


@pytest.mark.prometheus
def test_scaler_once_against_real_prometheus(prometheus: str, tmp_path) -> None:
    out = tmp_path / "recs.jsonl"
    res = CliRunner().invoke(
        root,
        [
            "scaler",
            "--policy",
            "showar",
            "--prometheus",
            prometheus,
            "--once",
            "--json",
            "--window",
            "30s",
            "--rate-window",
            f"{RATE_WINDOW}s",
            "--log",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    recs = {
        r["workload"]["name"]: r
        for r in map(json.loads, res.stdout.splitlines())
        if r["action"] != "affinity"
    }
    assert set(recs) == {"web", "db", "batch"}
    web = recs["web"]
    # two pods: the Deployment suffixes are stripped; the worst pod's p95 gauge is the signal
    assert web["signals"]["runq_p95_seconds"] == pytest.approx(0.022)
    assert web["signals"]["cpu_usage_cores"] == pytest.approx(0.9, rel=0.25)
    assert web["current"] == {"replicas": 2, "cpu_request_cores": 0.5, "cpu_limit_cores": 1.0}
    assert web["action"] == "scale_out" and web["recommended"]["replicas"] > 2
    assert "starved by neighbours" in web["reason"]
    # StatefulSet pod db-0 -> workload db; p95 1 ms is far below the 5 ms target
    db = recs["db"]
    assert db["signals"]["runq_p95_seconds"] == pytest.approx(0.001)
    assert db["action"] in ("none", "resize")
    # a NaN gauge is a missing signal, not a crash: the horizontal side holds
    batch = recs["batch"]
    assert batch["signals"]["runq_p95_seconds"] is None
    assert batch["recommended"]["replicas"] == 1
    assert len(out.read_text().splitlines()) == len(res.stdout.splitlines())


@pytest.mark.prometheus
def test_hpa_against_real_prometheus(prometheus: str) -> None:
    res = CliRunner().invoke(
        root,
        [
            "scaler",
            "--policy",
            "hpa",
            "--prometheus",
            prometheus,
            "--iterations",
            "1",
            "--json",
            "--window",
            "20s",
            "--rate-window",
            f"{RATE_WINDOW}s",
            "--workload",
            "shop/web",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["workload"]["name"] for r in recs] == ["web"]
    rec = recs[0]
    usage = rec["signals"]["cpu_usage_cores"]
    assert usage == pytest.approx(0.9, rel=0.25), rec
    # HPA on what Prometheus answered: 2 pods of 0.5 core; 0.9 cores is 90 % of 75 % -> 3
    # as the policy does it: the total split over the 2 ready pods, each in whole millicores
    pct = 2 * round(usage / 2 * 1000) * 100 // 1000
    ratio = pct / 75
    expected = 2 if abs(1 - ratio) <= 0.1 else math.ceil(ratio * 2)
    assert rec["recommended"]["replicas"] == expected, rec["reason"]
    assert f"{pct}%" in rec["reason"]


@pytest.mark.prometheus
def test_wait_by_holder_reaches_the_signals_and_the_attribution(prometheus: str) -> None:
    """The per-holder split, summed over a workload's pods by the scaler's own PromQL, arrives in
    the signal samples, and the attribution reads web as crowded by neighbours, db by itself."""
    src = PrometheusSource(prometheus, queries=promql.queries(f"{RATE_WINDOW}s"), pod_queries={})
    fetched = src.fetch(time.time(), 20.0, 2.0)
    windows = windows_from_samples(fetched.samples)
    by = {ref.name: w for ref, w in windows.items()}
    for name, pods in (("web", 2), ("db", 1)):
        for holder, field in HOLDER_FIELDS.items():
            got = by[name].last(field)
            want = pods * HELD[("shop", name)][holder]
            assert got == pytest.approx(want, rel=0.2, abs=2e-3), (name, holder, got)
    assert by["batch"].last(HOLDER_FIELDS["other_cgroup"]) is None
    verdicts = {name: attribute_window(by[name]).cause for name in ("web", "db", "batch")}
    assert verdicts == {"web": "neighbours", "db": "own", "batch": "unknown"}


def test_unreachable_prometheus_is_a_runtime_error() -> None:
    res = CliRunner().invoke(
        root, ["scaler", "--prometheus", "http://127.0.0.1:9", "--once"], catch_exceptions=False
    )
    assert res.exit_code == 1
    assert "cannot reach Prometheus" in res.stderr
