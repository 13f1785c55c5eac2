"""The Kubernetes actuator against the real control plane, as the scaler's ServiceAccount (the
RBAC of deploy/): the scale subresource (controller-manager makes the pods, the scheduler binds
them to kwok nodes, kwok marks them Running), in-place resize through pods/resize, the pod-template
fallback, 409 conflict retries, dry-run, and no action on stale signals."""

from __future__ import annotations

import time

import pytest
from k8s_helpers import deployment, ensure_namespace, running_pods, wait_for, wait_running

from runqscale.scaler.actuators.kubernetes import KubernetesActuator
from runqscale.scaler.k8s.client import ApiClient, path
from runqscale.scaler.model import CurrentState, Recommendation, WorkloadRef

pytestmark = pytest.mark.kubernetes

NS = "act"


@pytest.fixture(scope="module")
def env(k8s_deployed):
    cp = k8s_deployed.cp
    ensure_namespace(cp, NS)
    return k8s_deployed


def scaler_client(d) -> ApiClient:
    return d.cp.client_for_token(d.token)


def make(cp, name, **kw):
    cp.admin.create(path("Deployment", NS), deployment(name, **kw))


def rec(name, cur, new, action, ts=None) -> Recommendation:
    return Recommendation(time.time() if ts is None else ts, WorkloadRef(NS, name), "test", {},
                          cur, new, action, "test")


def replicas(cp, name) -> int:
    return cp.admin.get(path("Deployment", NS, name))["spec"]["replicas"]


def test_scale_out_through_scale_subresource_pods_run_on_kwok_nodes(env):
    cp = env.cp
    make(cp, "web", replicas=1)
    wait_running(cp, NS, "web", 1)
    act = KubernetesActuator(scaler_client(env), dry_run=False)
    t0 = time.monotonic()
    r = act.apply(rec("web", CurrentState(1), CurrentState(4), "scale_out"))
    assert r.applied and r.method == "scale" and r.error is None, r
    pods = wait_running(cp, NS, "web", 4)
    elapsed = time.monotonic() - t0
    assert {p["spec"]["nodeName"] for p in pods} <= {"kwok-node-0", "kwok-node-1", "kwok-node-2"}
    print(f"scale 1->4: 4 pods Running on kwok nodes {elapsed:.1f} s after the scale PUT")
    r = act.apply(rec("web", CurrentState(4), CurrentState(2), "scale_in"))
    assert r.applied and r.detail == "replicas 4 -> 2"
    wait_running(cp, NS, "web", 2)


def test_dry_run_is_validated_but_changes_nothing(env):
    cp = env.cp
    make(cp, "dry", replicas=1)
    act = KubernetesActuator(scaler_client(env))  # dry_run=True is the default
    r = act.apply(rec("dry", CurrentState(1), CurrentState(3), "scale_out"))
    assert r.dry_run and r.applied and r.error is None
    assert replicas(cp, "dry") == 1
    r = act.apply(rec("dry", CurrentState(1), CurrentState(1, 0.3, 0.6), "resize"))
    assert r.dry_run and r.error is None, r
    tmpl = cp.admin.get(path("Deployment", NS, "dry"))["spec"]["template"]["spec"]
    assert tmpl["containers"][0]["resources"]["requests"]["cpu"] == "100m"


def test_no_action_on_stale_signals(env):
    cp = env.cp
    make(cp, "stale", replicas=1)
    act = KubernetesActuator(scaler_client(env), dry_run=False, max_signal_age=60)
    r = act.apply(rec("stale", CurrentState(1), CurrentState(5), "scale_out", ts=time.time() - 61))
    assert not r.applied and "no action without fresh signals" in r.error
    assert replicas(cp, "stale") == 1


def test_conflict_409_is_retried_on_a_fresh_read(env):
    cp = env.cp
    make(cp, "race", replicas=1)
    wait_running(cp, NS, "race", 1)  # fewer status writes by the deployment controller now
    client = scaler_client(env)
    puts = []

    class Racing(ApiClient):
        """Another writer changes the Deployment between our GET and our PUT, once."""

        def update(self, p, obj, dry_run=False):
            puts.append(obj["metadata"]["resourceVersion"])
            if len(puts) == 1:
                cp.admin.patch(path("Deployment", NS, "race"),
                               {"metadata": {"annotations": {"other-writer": "was-here"}}})
            return super().update(p, obj, dry_run)

    racing = Racing(client.server, token=env.token, ca_file=str(cp.pki / "ca.crt"))
    r = KubernetesActuator(racing, dry_run=False).set_replicas(WorkloadRef(NS, "race"), 3)
    # >= 2: the deployment controller's own status writes can add a real conflict of their own
    assert r.applied and r.attempts >= 2 and len(puts) == r.attempts, r
    assert len(set(puts)) == len(puts)  # each retry carried the freshly read resourceVersion
    assert replicas(cp, "race") == 3


def test_cpu_resize_in_place_through_pods_resize(env):
    cp = env.cp
    make(cp, "rs", replicas=2, cpu=("100m", "200m"))
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in wait_running(cp, NS, "rs", 2)}
    act = KubernetesActuator(scaler_client(env), dry_run=False)
    r = act.apply(rec("rs", CurrentState(2, 0.1, 0.2), CurrentState(2, 0.3, 0.6), "resize"))
    assert r.applied and r.method == "resize", r
    pods = running_pods(cp, NS, "rs")
    # the same pods (no restart, no rollout), with the new CPU in their spec
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods} == before
    for p in pods:
        res = p["spec"]["containers"][0]["resources"]
        assert res["requests"]["cpu"] == "300m" and res["limits"]["cpu"] == "600m"
        assert res["requests"]["memory"] == "64Mi"  # untouched
    tmpl = cp.admin.get(path("Deployment", NS, "rs"))["spec"]["template"]["spec"]
    assert tmpl["containers"][0]["resources"]["requests"]["cpu"] == "100m"  # no rollout


def test_cpu_resize_falls_back_to_the_pod_template_when_qos_would_change(env):
    """A Guaranteed pod (requests == limits) cannot become Burstable in place: the API server
    refuses that, so the actuator patches the template (a rollout) instead."""
    cp = env.cp
    make(cp, "gq", replicas=1, cpu=("200m", "200m"), memory=("64Mi", "64Mi"))
    wait_running(cp, NS, "gq", 1)
    act = KubernetesActuator(scaler_client(env), dry_run=False)
    r = act.apply(rec("gq", CurrentState(1, 0.2, 0.2), CurrentState(1, 0.3, 0.6), "resize"))
    assert r.applied and r.method == "template", r
    assert "QoS class Guaranteed -> Burstable" in r.detail
    tmpl = cp.admin.get(path("Deployment", NS, "gq"))["spec"]["template"]["spec"]
    res = tmpl["containers"][0]["resources"]
    assert res["requests"]["cpu"] == "300m" and res["limits"]["cpu"] == "600m"

    def rolled():
        ps = running_pods(cp, NS, "gq")
        return len(ps) == 1 and ps[0]["spec"]["containers"][0]["resources"]["limits"]["cpu"] \
            == "600m"
    wait_for(rolled, 60, 0.3, what="the rollout to a 600m pod")


def test_guaranteed_pod_is_resized_in_place_when_qos_is_kept(env):
    """request == limit keeps the pod Guaranteed: resized in place, same pod."""
    cp = env.cp
    make(cp, "gq2", replicas=1, cpu=("200m", "200m"), memory=("64Mi", "64Mi"))
    wait_running(cp, NS, "gq2", 1)
    act = KubernetesActuator(scaler_client(env), dry_run=False)
    r = act.apply(rec("gq2", CurrentState(1, 0.2, 0.2), CurrentState(1, 0.4, 0.4), "resize"))
    assert r.applied and r.method == "resize", r
    (p,) = running_pods(cp, NS, "gq2")
    assert p["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "400m"


def test_statefulset_scale_subresource(env):
    cp = env.cp
    dep = deployment("db", replicas=1)
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {**dep["spec"], "serviceName": "db"}}
    cp.admin.create(path("StatefulSet", NS), sts)
    wait_running(cp, NS, "db", 1)
    act = KubernetesActuator(scaler_client(env), dry_run=False)
    ref = WorkloadRef(NS, "db", "StatefulSet")
    r = act.apply(Recommendation(time.time(), ref, "test", {}, CurrentState(1), CurrentState(3),
                                 "scale_out", "test"))
    assert r.applied and r.method == "scale", r
    pods = wait_running(cp, NS, "db", 3)
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1", "db-2"]
