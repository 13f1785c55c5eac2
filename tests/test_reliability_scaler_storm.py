"""409 and 429 storms under the in-cluster controller (issue 10), real API server behind a proxy.

A small HTTP proxy sits between the controller and the real kube-apiserver (the scaler's
ServiceAccount token passes through). While the storm is on it answers every write to the `scale`
subresource of the storm workloads itself: 409 Conflict for one group, 429 Too Many Requests with
`Retry-After: 1` (what API Priority and Fairness sends) for another; everything else goes to the
API server. The controller must record each storm workload's failure in one line, go on serving
the calm workloads, keep each step within its budget, back off per workload instead of repeating
the same burst every step, and apply everything once the storm stops (recovery time measured).
A 429 try costs ~4 s (the client's 5 attempts, 4 waits of Retry-After), so six throttled ones need
about four 6 s steps to be tried once each: the storm lasts STORM_S = 40 s.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from k8s_helpers import FreshSignals, deployment, ensure_namespace

from runqscale.scaler.actuators.kubernetes import KubernetesActuator
from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.k8s.client import ApiClient, path
from runqscale.scaler.k8s.controller import Controller
from runqscale.scaler.k8s.events import EventRecorder
from runqscale.scaler.model import ScalerConfig
from runqscale.scaler.signals import read_file

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]

NS = "storm"
CALM = [f"calm-{i}" for i in range(3)]
CONFLICT = [f"conflict-{i}" for i in range(6)]
THROTTLED = [f"throttled-{i}" for i in range(6)]
STORM_S = float(os.environ.get("RUNQSCALE_STORM_S", "40"))
BUDGET_S, BACKOFF_CAP_S, PERIOD_S, TICK_S = 6.0, 4.0, 0.5, 0.5
SCALE = re.compile(rf"/apis/apps/v1/namespaces/{NS}/deployments/([^/]+)/scale")


class StormProxy:
    """Plain HTTP in front of the API server's HTTPS; injects 409/429 for chosen scale writes."""

    def __init__(self, upstream: str, ca_file: str) -> None:
        self.storm = threading.Event()
        self.writes: Counter = Counter()  # scale writes seen per workload
        self.injected: Counter = Counter()
        host, port = upstream.removeprefix("https://").split(":")
        ctx = ssl.create_default_context(cafile=ca_file)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                m = SCALE.match(self.path.split("?")[0])
                if m and self.command in ("PUT", "PATCH"):
                    proxy.writes[m.group(1)] += 1
                    status = proxy._injected(m.group(1))
                    if status:
                        proxy.injected[m.group(1)] += 1
                        return self._reply(status, *_status_body(status), [("Retry-After", "1")])
                conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
                try:
                    hdrs = {k: v for k, v in self.headers.items()
                            if k.lower() in ("authorization", "content-type", "accept")}
                    conn.request(self.command, self.path, body=body or None, headers=hdrs)
                    resp = conn.getresponse()
                    self._reply(resp.status, resp.read(), resp.getheader("Content-Type", ""), [])
                finally:
                    conn.close()

            def _reply(self, status: int, body: bytes, ctype: str, extra: list) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _any  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _injected(self, name: str) -> int | None:
        if not self.storm.is_set():
            return None
        return 409 if name in CONFLICT else 429 if name in THROTTLED else None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _status_body(code: int) -> tuple[bytes, str]:
    reason = {409: "Conflict", 429: "TooManyRequests"}[code]
    msg = {409: "the object has been modified; please apply your changes to the latest version",
           429: "storm injected by the test proxy"}[code]
    doc = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg,
           "reason": reason, "code": code}
    return json.dumps(doc).encode(), "application/json"


def _replicas(cp, name: str) -> int:
    return cp.admin.get(path("Deployment", NS, name))["spec"]["replicas"]


def test_409_and_429_storms(k8s_deployed, tmp_path):
    env = k8s_deployed
    cp = env.cp
    ensure_namespace(cp, NS)
    names = CALM + CONFLICT + THROTTLED
    for n in names:
        cp.admin.create(path("Deployment", NS), deployment(n, annotations={
            ann.POLICY: "static", ann.MIN_REPLICAS: "2"}))
    sig = FreshSignals(tmp_path / "s.jsonl", [f"{NS}/{n}" for n in names])
    proxy = StormProxy(cp.server, str(cp.pki / "ca.crt"))
    client = ApiClient(proxy.url, token=env.token)
    ctl = Controller(
        client, lambda now: read_file(sig.path),
        KubernetesActuator(client, dry_run=False, max_signal_age=5),
        EventRecorder(client, instance="storm"), ScalerConfig(period_seconds=PERIOD_S), "storm",
        namespaces=[NS], max_signal_age=5, step_budget_seconds=BUDGET_S,
        error_backoff_cap=BACKOFF_CAP_S,
    )
    steps: list[tuple[float, float, list]] = []  # (start, duration, outcomes)

    def step() -> list:
        t0 = time.monotonic()
        out = ctl.step()
        steps.append((t0, time.monotonic() - t0, out))
        time.sleep(TICK_S)
        return out

    try:
        proxy.storm.set()
        t_start = time.monotonic()
        while time.monotonic() - t_start < STORM_S:
            step()
        storm_steps = list(steps)
        stormed = {n: _replicas(cp, n) for n in CONFLICT + THROTTLED}
        calm = {n: _replicas(cp, n) for n in CALM}
        writes_in_storm = Counter(proxy.writes)
        proxy.storm.clear()
        t_off = time.monotonic()
        recovered = None
        while time.monotonic() - t_off < 60:
            step()
            if all(_replicas(cp, n) == 2 for n in names):
                recovered = time.monotonic() - t_off
                break
    finally:
        sig.stop()
        proxy.close()
    outcomes = [o for _, _, out in storm_steps for o in out]
    errors = {n: [o for o in outcomes if o.workload == f"{NS}/{n}" and o.status == "error"]
              for n in CONFLICT + THROTTLED}
    durations = [d for _, d, _ in storm_steps]
    deferred = [o for o in outcomes if o.status == "deferred"]
    tries = {n: len(e) for n, e in errors.items()}
    per_try = {n: writes_in_storm[n] / max(1, tries[n]) for n in tries}
    refused = sum(1 for e in errors.values() for o in e if "without fresh signals" in o.message)
    print(f"\nstorm figures: workloads={len(names)} (409: {len(CONFLICT)}, 429: "
          f"{len(THROTTLED)}, calm: {len(CALM)}) storm_s={STORM_S:g} steps={len(storm_steps)} "
          f"step_s max={max(durations):.2f} median={sorted(durations)[len(durations) // 2]:.2f} "
          f"(budget {BUDGET_S:g}) deferred_steps={len(deferred)} "
          f"tries_per_workload min={min(tries.values())} max={max(tries.values())} "
          f"writes_per_try max={max(per_try.values()):.1f} "
          f"injected={sum(proxy.injected.values())} stale_refusals={refused} crashes=0 "
          f"recovery_s={recovered if recovered is None else round(recovered, 2)} "
          f"(backoff cap {BACKOFF_CAP_S:g} s)")
    # the calm workloads were served in the first step, the storm ones never changed
    assert calm == dict.fromkeys(CALM, 2)
    assert stormed == dict.fromkeys(CONFLICT + THROTTLED, 1)
    # each storm workload: its failure recorded, each time in one line naming the status
    for n, errs in errors.items():
        code = "409" if n in CONFLICT else "429"
        assert errs, f"{n}: no error outcome"
        # or, late in a long step, the actuator's refusal to act on signals read before it
        bad = [o.message for o in errs if "\n" in o.message
               or not (code in o.message or "no action without fresh signals" in o.message)]
        assert bad == [], bad
    # no hot loop: backoff bounds the tries (1 + one per cap, after 0.5, 1, 2 s), the client
    # and actuator bound the writes per try (5), a step overruns its budget by one workload
    assert max(tries.values()) <= 3 + STORM_S / BACKOFF_CAP_S + 1
    assert max(per_try.values()) <= 5
    assert max(durations) <= BUDGET_S + 5 + 2  # 429: 4 waits of Retry-After 1 s for the last
    assert recovered is not None and recovered <= BACKOFF_CAP_S + BUDGET_S + 5
