"""Every PromQL expression of the Grafana dashboard, run on a real Prometheus.

The expressions are taken from deploy/grafana/runqscale-dashboard.json (panel targets, query
variables, annotations), Grafana variables substituted with concrete values, and run with
/api/v1/query on a real Prometheus (Debian's /usr/bin/prometheus, 1 s scrapes, temp dir, free
loopback port) that also loads deploy/prometheus/runqscale-rules.yaml.

- `test_queries_on_fake_exporter`: Prometheus scrapes a small in-test HTTP server exposing the
  agent and kube-state-metrics series the dashboard names, with plausible values: every expression
  executes and returns data, including the kube-state-metrics panels. The scaler's panels run
  against the real `scaler k8s` in tests/test_k8s_scaler_log_metrics.py.
- `test_queries_on_running_agent_with_hog`: Prometheus scrapes the real `runqscale agent`
  while a CPU hog runs in a v1 `cpu` cgroup limited to 0.5 core: every expression executes, and
  every per-container, per-workload and agent panel returns data for the hog's cgroup. Panels fed
  only by the scaler or kube-state-metrics (not running here) and per-cgroup PSI (cgroup v1 has
  none) must execute but may be empty.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import require_root

from runqscale.exporter import metrics
from runqscale.ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "deploy", "prometheus", "runqscale-rules.yaml")
RUNQSCALE = os.path.join(ROOT, ".venv", "bin", "runqscale")

_spec = importlib.util.spec_from_file_location(
    "render_panels", os.path.join(ROOT, "deploy", "grafana", "render_panels.py"))
assert _spec and _spec.loader
rp = importlib.util.module_from_spec(_spec)
sys.modules["render_panels"] = rp
_spec.loader.exec_module(rp)

DASH = rp.load_dashboard()
QUERIES = rp.dashboard_queries(DASH)

# Metrics whose series come from components not running in the kernel test.
EXTERNAL = ("runqscale_scaler_", "kube_")


def _qid(q) -> str:
    return f"{q.where}:{q.title}:{q.ref}".replace(" ", "_")


# -- static checks (no Prometheus) ------------------------------------------------------------

def test_dashboard_shape() -> None:
    names = {v["name"] for v in DASH["templating"]["list"]}
    assert {"namespace", "pod", "node", "datasource"} <= names
    ids = [p["id"] for p in rp.iter_panels(DASH)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    types = {p["type"] for p in rp.iter_panels(DASH)}
    assert "heatmap" in types and "status-history" in types
    for p in rp.iter_panels(DASH):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p.get("targets"), f"panel {p['title']!r} has no query"
    assert any(a.get("name") == "Scaler decisions" for a in DASH["annotations"]["list"])
    assert set(rp.MAIN_PANELS) <= {p["title"] for p in rp.iter_panels(DASH)}


def test_every_metric_name_is_declared() -> None:
    """Every runqscale metric a panel, variable or annotation reads is declared once in
    exporter/metrics.py (the agent's and the scaler's), so a rename breaks this test first."""
    exprs = "\n".join(q.expr for q in QUERIES)
    assert "runqscale_scaler_decisions_total" in exprs
    assert not metrics.undeclared(exprs), metrics.undeclared(exprs)


def test_every_variable_has_a_value() -> None:
    assert len(QUERIES) > 30
    for q in QUERIES:
        rp.substitute(q.expr, rp.DEFAULT_VARS)  # raises on a variable without a value


def test_substitution() -> None:
    assert rp.substitute('x{a=~"$pod", b=~"${node}", c="[[container]]"}[$__rate_interval]',
                         {"pod": "p.*", "node": "n1", "container": "/c", "__rate_interval": "5s"}
                         ) == 'x{a=~"p.*", b=~"n1", c="/c"}[5s]'
    assert rp.label_values_query('label_values(m{a=~"x"}, pod)') == (
        'group by (pod) (m{a=~"x"})', "pod")


# -- a real Prometheus ------------------------------------------------------------------------

def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


class Prometheus:
    """A real Prometheus scraping one target every second, with the runqscale rules loaded."""

    def __init__(self, target: str) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not os.path.exists(binary):
            pytest.skip("prometheus not found (Debian package `prometheus`)")
        self.dir = tempfile.mkdtemp(prefix="runqscale-prom-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(
                "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}\n"
                f"rule_files: ['{RULES}']\n"
                "scrape_configs:\n"
                "  - job_name: runqscale-agent\n"
                f"    static_configs: [{{targets: ['{target}']}}]\n")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
             "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.logs()}")
            try:
                if b"Ready" in _get(self.url + "/-/ready"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.close()
        raise AssertionError(f"prometheus not ready in 20 s: {self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def query(self, expr: str) -> dict:
        return rp.api(self.url, "/api/v1/query", {"query": expr, "time": f"{time.time():.3f}"})

    def series(self, expr: str) -> list[dict]:
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float, what: str) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.series(expr)
            if res:
                return res
            time.sleep(0.5)
        targets = rp.api(self.url, "/api/v1/targets", {})
        raise AssertionError(f"{what}: no series for {expr} after {timeout} s; targets: "
                             f"{targets.get('data', {}).get('activeTargets')}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _run_all(prom: Prometheus, values: dict[str, str]) -> dict[str, tuple[str, dict]]:
    """Run every dashboard query; returns {id: (promql, response)}; fails on any error."""
    out, errors = {}, []
    for q in QUERIES:
        expr = rp.promql(q, values)
        body = prom.query(expr)
        if body.get("status") != "success":
            errors.append(f"{_qid(q)}: {expr}\n    -> {body.get('errorType')}: {body.get('error')}")
        elif body.get("warnings"):
            errors.append(f"{_qid(q)}: {expr}\n    -> warnings {body['warnings']}")
        out[_qid(q)] = (expr, body)
    assert not errors, "queries failed:\n" + "\n".join(errors)
    return out


# -- fake exporter ----------------------------------------------------------------------------

LE = ["1.024e-06", "4.096e-06", "1.2288e-05", "4.9152e-05", "0.000196608", "0.000786432",
      "0.003145728", "0.012582912", "0.050331648", "0.201326592", "+Inf"]
# cumulative share of waits under each bound, per container
SHAPES = {"fast": [0.1, 0.4, 0.7, 0.9, 0.97, 0.99, 1, 1, 1, 1, 1],
          "slow": [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.85, 0.97, 1, 1]}
FAKE_CONTAINERS = [
    ('node="node-a",namespace="shop",pod="web-7d4b9c8f6d-x2k5p",container="web",'
     'cgroup="/kubepods/burstable/pod1/abc"', "slow", 400.0),
    ('node="node-a",namespace="shop",pod="db-0",container="postgres",'
     'cgroup="/kubepods/burstable/pod2/def"', "fast", 900.0),
    ('node="node-a",namespace="",pod="",container="/system.slice/cron.service",'
     'cgroup="/system.slice/cron.service"', "fast", 20.0),
]


def fake_exposition(t: float) -> str:
    """Text exposition of every metric the dashboard reads, `t` seconds after start."""
    lines = []

    def add(kind: str, name: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# TYPE {name} {kind}")
        for labels, v in samples:
            lines.append(f"{name}{{{labels}}} {v!r}" if labels else f"{name} {v!r}")

    hist = []
    for lab, shape, rate in FAKE_CONTAINERS:
        n = rate * t
        hist += [(f'{lab},le="{le}"', math.floor(share * n)) for le, share in zip(LE, SHAPES[shape],
                                                                                 strict=True)]
    lines.append("# TYPE runqscale_runqueue_latency_seconds histogram")
    for labels, v in hist:
        lines.append(f"runqscale_runqueue_latency_seconds_bucket{{{labels}}} {v}")
    for lab, shape, rate in FAKE_CONTAINERS:
        n = math.floor(rate * t)
        lines.append(f"runqscale_runqueue_latency_seconds_count{{{lab}}} {n}")
        lines.append(f"runqscale_runqueue_latency_seconds_sum{{{lab}}} "
                     f"{n * (0.008 if shape == 'slow' else 0.00005)!r}")
    slow = {lab: shape == "slow" for lab, shape, _ in FAKE_CONTAINERS}
    labs = [lab for lab, _, _ in FAKE_CONTAINERS]
    add("gauge", "runqscale_runqueue_latency_p95_seconds",
        [(lab, 0.03 if slow[lab] else 0.0001) for lab in labs])
    add("gauge", "runqscale_runqueue_latency_p99_seconds",
        [(lab, 0.09 if slow[lab] else 0.0004) for lab in labs])
    for name, per_s_slow, per_s_fast in [
            ("runqscale_runqueue_wait_seconds_total", 1.2, 0.05),
            ("runqscale_cpu_usage_seconds_total", 0.5, 0.3),
            ("runqscale_cpu_periods_total", 10.0, 10.0),
            ("runqscale_cpu_throttled_periods_total", 6.0, 0.0),
            ("runqscale_cpu_throttled_seconds_total", 0.3, 0.0),
            ("runqscale_cpu_pressure_some_seconds_total", 0.6, 0.02)]:
        add("counter", name, [(lab, (per_s_slow if slow[lab] else per_s_fast) * t)
                              for lab in labs])
    # the wait above split by what held the CPU (s/s; adds up to the wait counter's rate)
    held = {"slow": {"same_cgroup": 0.2, "other_cgroup": 0.9, "kernel": 0.05, "idle": 0.05},
            "fast": {"same_cgroup": 0.04, "other_cgroup": 0.01, "kernel": 0.0, "idle": 0.0}}
    add("counter", "runqscale_runqueue_wait_by_holder_seconds_total",
        [(f'{lab},holder="{h}"', v * t) for lab, shape, _ in FAKE_CONTAINERS
         for h, v in held[shape].items()])
    events = sum(r for _, _, r in FAKE_CONTAINERS) * t
    add("counter", "runqscale_agent_events_total", [("", math.floor(events * 1.02))])
    add("counter", "runqscale_agent_bpf_run_seconds_total", [("", events * 2 * 350e-9)])
    add("counter", "runqscale_agent_bpf_runs_total", [("", math.floor(events * 2))])
    add("gauge", "runqscale_agent_map_entries", [("", 130.0)])
    add("gauge", "runqscale_agent_map_capacity", [("", 8192.0)])
    add("counter", "runqscale_agent_map_full_total", [("", 0.0)])
    add("counter", "runqscale_agent_attribution_misses_total", [("", math.floor(events * 0.02))])
    add("counter", "runqscale_agent_unknown_pods_total", [("", 0.0)])
    add("counter", "runqscale_agent_sample_errors_total", [("", 0.0)])
    add("gauge", "runqscale_agent_scrape_duration_seconds", [("", 0.004)])
    add("gauge", "runqscale_agent_containers", [("", 3.0)])
    add("gauge", "runqscale_agent_build_info",
        [('version="0.0.0",backend="core",kernel="6.1.0",hierarchy="v1"', 1.0)])
    add("gauge", "process_resident_memory_bytes", [("", 48e6)])
    add("counter", "process_cpu_seconds_total", [("", 0.02 * t)])
    add("gauge", "kube_deployment_status_replicas",
        [('namespace="shop",deployment="web"', 2.0 + math.floor(t / 5))])
    add("gauge", "kube_pod_container_resource_limits",
        [('namespace="shop",pod="web-7d4b9c8f6d-x2k5p",container="web",resource="cpu",'
          'unit="core",node="node-a"', 0.5),
         ('namespace="shop",pod="db-0",container="postgres",resource="cpu",unit="core",'
          'node="node-a"', 2.0)])
    return "\n".join(lines) + "\n"


class FakeExporter:
    def __init__(self) -> None:
        t0 = time.monotonic()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = fake_exposition(time.monotonic() - t0 + 1.0).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.prometheus
def test_queries_on_fake_exporter() -> None:
    fake = FakeExporter()
    prom = Prometheus(fake.address)
    try:
        # Recording rules are two evaluations behind the scrapes; wait for the last of them.
        prom.wait_for('workload:runqscale_runqueue_latency_seconds:p95_30s{workload="web"}', 30,
                      "recording rules")
        time.sleep(6)  # two+ samples in every 5 s rate window
        results = _run_all(prom, dict(rp.DEFAULT_VARS))
        # the scaler's panels run against the real scaler: tests/test_k8s_scaler_log_metrics.py
        empty = [f"{k}: {expr}" for k, (expr, body) in results.items()
                 if not body["data"]["result"] and k != "annotation:Agent_down:"
                 and "runqscale_scaler_" not in expr]
        assert not empty, "queries without data on the fake exporter:\n" + "\n".join(empty)
        # The workload rule grouped the Deployment pod and kept the cgroup path outside k8s.
        workloads = {(r["metric"].get("namespace", ""), r["metric"]["workload"]) for r in
                     prom.series("workload:runqscale_runqueue_latency_seconds:p95_30s")}
        assert workloads == {("shop", "web"), ("shop", "db"), ("", "/system.slice/cron.service")}
    finally:
        prom.close()
        fake.close()


# -- the real agent and a quota-limited hog ---------------------------------------------------

def _agent_available() -> bool:
    return importlib.util.find_spec("runqscale.agent.daemon_cmd") is not None and \
        os.path.exists(RUNQSCALE)


@pytest.mark.kernel
@pytest.mark.prometheus
def test_queries_on_running_agent_with_hog() -> None:
    require_root()
    if not _agent_available():
        pytest.skip("`runqscale agent` (runqscale.agent.daemon_cmd) is not installed")
    from runqscale.probes.model import Hierarchy
    from runqscale.validation.sandbox import Sandbox

    sb = Sandbox(Hierarchy.V1_CPU, name="runqscale-dash")
    agent = prom = None
    agent_log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
    try:
        g = sb.group("hog", quota_cores=0.5)
        sb.spawn(g)
        hog = g.rel
        assert all(c.isalnum() or c in "/-_" for c in hog), hog  # usable as a regex as is
        port = free_port()
        agent = subprocess.Popen(
            [RUNQSCALE, "agent", "--listen", f"127.0.0.1:{port}", "--interval", "1s"],
            stdout=agent_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if agent.poll() is not None or time.monotonic() > deadline:
                agent_log.seek(0)
                raise AssertionError(f"agent not serving /metrics: {agent_log.read()[-3000:]}")
            try:
                if hog.encode() in _get(f"http://127.0.0.1:{port}/metrics"):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        prom = Prometheus(f"127.0.0.1:{port}")
        sel = f'{{container=~".*{hog}"}}'
        prom.wait_for("workload:runqscale_runqueue_latency_seconds:p95_30s" + sel.replace(
            "container", "workload"), 30, "recording rules on the hog")
        prom.wait_for(f"runqscale_cpu_throttled_periods_total{sel}", 10, "hog throttling")
        time.sleep(6)  # two+ samples in every 5 s rate window

        values = dict(rp.DEFAULT_VARS, container=f".*{hog}")
        results = _run_all(prom, values)
        problems = []
        for q in QUERIES:
            expr, body = results[_qid(q)]
            res = body["data"]["result"]
            external = any(m in q.expr for m in EXTERNAL)
            psi_v1 = "runqscale_cpu_pressure_some_seconds_total" in q.expr
            if external or psi_v1 or q.title == "Agent down":
                continue  # must execute (checked above); data not expected here
            if not res:
                problems.append(f"{_qid(q)}: no data: {expr}")
                continue
            for key in ("container", "workload"):
                vals = {r["metric"].get(key) for r in res if key in r["metric"]}
                if vals and not any(v.strip("/") == hog.strip("/") for v in vals):
                    problems.append(f"{_qid(q)}: no series for the hog ({key}={vals}): {expr}")
        if any("process_" in p for p in problems):
            problems.append("hint: the metric contract includes client_python's process_* "
                            "metrics; the agent's CollectorRegistry needs a ProcessCollector")
        assert not problems, "\n".join(problems)

        # The hog is throttled by its 0.5-core quota, and its p95 is far above a millisecond.
        thr = prom.series(
            f"sum(rate(runqscale_cpu_throttled_periods_total{sel}[5s])) / "
            f"sum(rate(runqscale_cpu_periods_total{sel}[5s]))")
        assert thr and float(thr[0]["value"][1]) > 0.3, thr
        p95 = prom.series(f"histogram_quantile(0.95, sum by (le) "
                          f"(rate(runqscale_runqueue_latency_seconds_bucket{sel}[10s])))")
        assert p95 and float(p95[0]["value"][1]) > 1e-3, p95
    finally:
        if prom is not None:
            prom.close()
        if agent is not None and agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        agent_log.close()
        sb.close()
