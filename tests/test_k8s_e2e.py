"""End to end, all real parts: a Deployment on the real control plane opts in to SHOWAR; its pod's
container is a real cgroup on this machine with a CPU-quota-throttled hog (0.1 core, so the test
stays cheap for the machine); the real agent measures its run-queue latency and labels it with the
pod's real name and uid from the API server; a real Prometheus scrapes the agent; the scaler reads
Prometheus (the same PromQL as in production), decides, and acts as its ServiceAccount. The hog
waits behind its own quota (throttled), so showar v2 resizes it (in place, `pods/resize`) rather
than adding replicas; a Resize Event records why."""

from __future__ import annotations

import json
import secrets
import time

import pytest
from agent_helpers import AgentProcess, FakePod, pod_list
from k8s_helpers import deployment, ensure_namespace, wait_running

from runqscale.probes.model import Hierarchy
from runqscale.scaler import promql
from runqscale.scaler.actuators.kubernetes import KubernetesActuator
from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.k8s.client import path
from runqscale.scaler.k8s.controller import Controller
from runqscale.scaler.k8s.events import EventRecorder
from runqscale.scaler.model import ScalerConfig
from runqscale.scaler.prometheus_source import PrometheusSource
from runqscale.validation.sandbox import Sandbox

pytestmark = [pytest.mark.kubernetes, pytest.mark.kernel, pytest.mark.prometheus,
              pytest.mark.slow]

NS = "e2e"


def test_agent_to_prometheus_to_scaler_scales_the_deployment(k8s_deployed, prometheus, tmp_path,
                                                              root_required):
    d = k8s_deployed
    cp = d.cp
    ensure_namespace(cp, NS)
    cp.admin.create(path("Deployment", NS), deployment("hog", annotations={
        ann.POLICY: "showar", ann.TARGET_RUNQ_P95: "2ms", ann.MAX_REPLICAS: "4"}))
    (pod,) = wait_running(cp, NS, "hog", 1)
    md = pod["metadata"]
    # the kubelet's view of that pod: the API object plus the container id a runtime would give
    fake = FakePod(NS, md["name"], "app", md["uid"], secrets.token_hex(32))
    pods_file = tmp_path / "pods.json"
    pods_file.write_text(json.dumps(pod_list([fake])))

    client = cp.client_for_token(d.token)
    recorder = EventRecorder(client, instance="e2e")
    with Sandbox(Hierarchy.V1_CPU, name="rqs-k8s-e2e") as sb:
        g = sb.group(fake.cgroup_name(), quota_cores=0.1)
        agent = AgentProcess("--pods-file", str(pods_file), "--cgroup", sb.base)
        try:
            prom = prometheus([agent.addr])
            src = PrometheusSource(prom.url, queries=promql.queries("10s"), staleness_seconds=30)
            ctl = Controller(
                client, lambda now: src.fetch(now, 60.0, 1.0).samples,
                KubernetesActuator(client, dry_run=False, max_signal_age=30), recorder,
                ScalerConfig(period_seconds=1.0), "e2e", namespaces=[NS], max_signal_age=30,
            )
            sb.spawn(g)
            t0 = time.monotonic()
            outcome = None
            while time.monotonic() - t0 < 60 and outcome is None:
                for o in ctl.step():
                    if o.workload == f"{NS}/hog" and o.applied:
                        outcome = o
                time.sleep(1.0)
            elapsed = time.monotonic() - t0
        finally:
            agent.stop()
    assert outcome is not None, "the scaler never acted on the hog's Deployment"
    assert outcome.action == "resize" and outcome.replicas == (1, 1), outcome.message
    assert "throttled" in outcome.message and "in place" in outcome.message, outcome.message
    print(f"hog started -> resized in {elapsed:.1f} s: {outcome.message}")
    pods = cp.admin.get(f"/api/v1/namespaces/{NS}/pods", labelSelector="app=hog")["items"]
    limits = [c["resources"]["limits"]["cpu"] for p in pods for c in p["spec"]["containers"]]
    assert limits and all(lim not in ("200m", "0.2") for lim in limits), limits  # grown
    events = cp.admin.get(f"/api/v1/namespaces/{NS}/events",
                          fieldSelector="involvedObject.kind=Deployment,involvedObject.name=hog,"
                                        "reason=Resize")["items"]
    assert events and "showar" in events[0]["message"]
