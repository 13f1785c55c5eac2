"""1,000 opted-in workloads on the real control plane: one scaler step (list, validate annotations,
match signals, decide, dry-run the scale, record an Event) finishes well inside a decision period,
a bad annotation or missing signals on some workloads do not hold back the others, and repeated
Events are aggregated rather than multiplied."""

from __future__ import annotations

import json
import time

import pytest
from k8s_helpers import deployment, ensure_namespace

from runqscale.scaler.actuators.kubernetes import KubernetesActuator
from runqscale.scaler.k8s import annotations as ann
from runqscale.scaler.k8s.controller import Controller
from runqscale.scaler.k8s.events import EventRecorder
from runqscale.scaler.model import Sample, ScalerConfig, WorkloadRef

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]

NS = "scale"
N, N_BAD, N_SILENT = 1000, 10, 10
STEP_BUDGET_S = 15.0  # the static/HPA decision period: a step must fit inside it


def test_one_step_over_1000_workloads(k8s_deployed):
    d = k8s_deployed
    cp = d.cp
    ensure_namespace(cp, NS)
    items = []
    for i in range(N):
        a = {ann.POLICY: "static", ann.MIN_REPLICAS: "2"}
        if i < N_BAD:
            a[ann.MAX_REPLICAS] = "1O"  # letter O: invalid
        items.append({**deployment(f"w{i:04d}", replicas=0, annotations=a)})
        items[-1]["metadata"]["namespace"] = NS
    t0 = time.monotonic()
    cp.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": items}), timeout=300)
    created = time.monotonic() - t0

    now = time.time()
    samples = [Sample(now, WorkloadRef(NS, f"w{i:04d}"), replicas=0, runq_p95_seconds=0.001)
               for i in range(N - N_SILENT)]  # the last N_SILENT have no signals
    client = cp.client_for_token(d.token)  # as the scaler's ServiceAccount
    ctl = Controller(client, lambda now: samples, KubernetesActuator(client),
                     EventRecorder(client, instance="scale-test"),
                     ScalerConfig(period_seconds=0.01), "scale-test", namespaces=[NS])
    timings = []
    for _ in range(2):
        t0 = time.monotonic()
        outs = ctl.step()
        timings.append(time.monotonic() - t0)
    print(f"{N} workloads: created in {created:.1f} s; scaler step {timings[0]:.1f} s "
          f"(first: Events created), {timings[1]:.1f} s (second: Events patched)")
    by = {}
    for o in outs:
        by[o.status] = by.get(o.status, 0) + 1
    assert by == {"decided": N - N_BAD - N_SILENT, "invalid": N_BAD, "no-signals": N_SILENT}
    assert all(o.dry_run and o.action == "scale_out" for o in outs if o.status == "decided")
    assert max(timings) < STEP_BUDGET_S
    # aggregated: one Event per (workload, reason), count 2 after two steps
    events = cp.admin.get(f"/api/v1/namespaces/{NS}/events",
                          fieldSelector="reason=ScaleOutDryRun")["items"]
    assert len(events) == N - N_BAD - N_SILENT and {e["count"] for e in events} == {2}
    cp.kubectl("delete", "namespace", NS, "--wait=false")
