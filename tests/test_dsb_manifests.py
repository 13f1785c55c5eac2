"""deathstarbench/manifests: DeathStarBench's social network for Kubernetes.

Without a cluster: every service of the social network has a Deployment and a Service that selects
it; the stateless ones (the C++ Thrift services and the nginx front end) opt into runqscale with
annotations the scaler itself accepts, and every container sets CPU and memory requests and limits;
the stores do not opt in; service-config.json names exactly the Services deployed, on their ports.

Against the real API server (marked `kubernetes`): the base and the with-jaeger overlay render
with kustomize and pass server-side dry-run; applied for real, every Deployment's pod runs on the
kwok nodes (so the requests fit and nothing is rejected at admission), the live objects still
parse as opted-in workloads, and the scaler's controller (as its ServiceAccount, dry-run) decides
on exactly the stateless ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from k8s_helpers import REPO, FreshSignals, wait_for

from runqscale.scaler.actuators.kubernetes import KubernetesActuator, template_cpu
from runqscale.scaler.k8s import annotations
from runqscale.scaler.k8s.controller import Controller
from runqscale.scaler.k8s.events import EventRecorder
from runqscale.scaler.k8s.quantity import parse_cpu
from runqscale.scaler.model import ScalerConfig
from runqscale.scaler.policies import POLICIES
from runqscale.scaler.signals import read_file

MANIFESTS = REPO / "deathstarbench/manifests"
BASE = MANIFESTS / "base"
OVERLAY = MANIFESTS / "overlays/with-jaeger"
NAMESPACE = "social-network"

# The social network's services (DeathStarBench socialNetwork, the version without RabbitMQ).
LOGIC = {
    "compose-post-service", "text-service", "url-shorten-service", "user-mention-service",
    "unique-id-service", "media-service", "user-service", "post-storage-service",
    "user-timeline-service", "home-timeline-service", "social-graph-service",
}
FRONTEND = {"nginx-web-server"}
STATELESS = LOGIC | FRONTEND
STORES = {
    "social-graph-mongodb", "social-graph-redis", "home-timeline-redis",
    "post-storage-mongodb", "post-storage-memcached", "user-timeline-mongodb",
    "user-timeline-redis", "url-shorten-mongodb", "url-shorten-memcached",
    "user-mongodb", "user-memcached", "media-mongodb", "media-memcached",
}
STORE_PORTS = {"mongodb": 27017, "redis": 6379, "memcached": 11211}
# In DeathStarBench's service-config.json but not deployed here (optional parts; README.md).
CONFIG_NOT_DEPLOYED = {"media-frontend", "redis-primary", "redis-replica"}


def base_objects() -> list[dict]:
    """The objects the base kustomization lists, read straight from its files (no kubectl)."""
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    out = []
    for rel in kust["resources"]:
        out += [d for d in yaml.safe_load_all((BASE / rel).read_text()) if d]
    return out


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


@pytest.fixture(scope="module")
def objs() -> list[dict]:
    return base_objects()


# ------------------------------------------------------------------ static checks


def test_base_lists_every_manifest_file():
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = {BASE / r for r in kust["resources"]}
    on_disk = {p for p in BASE.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk
    assert kust["namespace"] == NAMESPACE


def test_every_service_has_a_deployment_and_a_service(objs):
    deps, svcs = by_kind(objs, "Deployment"), by_kind(objs, "Service")
    assert set(deps) == STATELESS | STORES
    assert set(svcs) == STATELESS | STORES
    for name, dep in deps.items():
        assert "namespace" not in dep["metadata"], f"{name}: the kustomization sets the namespace"
        tmpl = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items()
        svc = svcs[name]
        assert svc["spec"]["selector"].items() <= tmpl["metadata"]["labels"].items(), name
        ports = {p["name"]: p["containerPort"]
                 for c in tmpl["spec"]["containers"] for p in c.get("ports", [])}
        for sp in svc["spec"]["ports"]:
            assert sp["targetPort"] in ports, f"{name}: Service targets an unnamed port"
            assert ports[sp["targetPort"]] == sp["port"], name


@pytest.mark.parametrize("name", sorted(STATELESS))
def test_stateless_deployment_opts_in_with_valid_annotations(objs, name):
    dep = by_kind(objs, "Deployment")[name]
    ann = dep["metadata"]["annotations"]
    # all four set explicitly, nothing left to the scaler's defaults
    missing = set(annotations.KNOWN) - set(ann)
    assert not missing, f"{name}: missing {sorted(missing)}"
    defaults = ScalerConfig()
    spec = annotations.parse(ann, defaults, tuple(POLICIES))  # raises AnnotationError if invalid
    assert spec is not None and spec.policy == "showar"
    assert 1 <= spec.config.min_replicas <= spec.config.max_replicas
    assert 0.0005 <= spec.config.target_runq_p95_seconds <= 0.1
    # the values YAML holds are strings (an int annotation would be rejected by the API server)
    assert all(isinstance(v, str) for v in ann.values())


@pytest.mark.parametrize("name", sorted(STATELESS | STORES))
def test_every_container_sets_cpu_and_memory_requests_and_limits(objs, name):
    dep = by_kind(objs, "Deployment")[name]
    pod = dep["spec"]["template"]["spec"]
    for c in pod.get("initContainers", []) + pod["containers"]:
        res = c["resources"]
        for which in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res[which]), f"{name}/{c['name']}: {which}"
        req, lim = parse_cpu(str(res["requests"]["cpu"])), parse_cpu(str(res["limits"]["cpu"]))
        assert 0 < req <= lim, f"{name}/{c['name']}: cpu request {req} > limit {lim}"
    req, lim = template_cpu(dep)  # what the scaler's actuator reads
    assert req is not None and lim is not None
    # showar's vertical floor is 0.128 core: start the opted-in services at or above it
    if name in STATELESS:
        assert req >= 0.128


@pytest.mark.parametrize("name", sorted(STORES))
def test_stores_do_not_opt_in(objs, name):
    dep = by_kind(objs, "Deployment")[name]
    assert annotations.POLICY not in (dep["metadata"].get("annotations") or {})
    assert dep["spec"]["replicas"] == 1


def test_service_config_names_the_deployed_services(objs):
    cms = by_kind(objs, "ConfigMap")
    cfg = json.loads(cms["social-network-config"]["data"]["service-config.json"])
    yaml.safe_load(cms["social-network-config"]["data"]["jaeger-config.yml"])
    svcs = by_kind(objs, "Service")
    entries = {k: v for k, v in cfg.items() if isinstance(v, dict) and "addr" in v}
    assert set(entries) - CONFIG_NOT_DEPLOYED == LOGIC | STORES
    for name in LOGIC | STORES:
        e = entries[name]
        assert e["addr"] == name
        assert e["port"] == svcs[name]["spec"]["ports"][0]["port"]
        kind = name.rsplit("-", 1)[1]
        assert e["port"] == STORE_PORTS.get(kind, 9090)
        if kind == "redis":  # read as ints by the services: a missing key fails at start
            assert (e["use_cluster"], e["use_replica"]) == (0, 0)
        if kind == "memcached":
            assert e["binary_protocol"] == 1
    # the machine id of unique ids comes from this interface's MAC
    assert entries["unique-id-service"]["netif"] == entries["user-service"]["netif"] == "eth0"
    # every logic service mounts it where DeathStarBench's binaries read config/
    for name in LOGIC:
        pod = by_kind(objs, "Deployment")[name]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        (m,) = c["volumeMounts"]
        assert m["mountPath"] == "/social-network-microservices/config"
        assert c["workingDir"] == "/social-network-microservices"
        (v,) = [v for v in pod["volumes"] if v["name"] == m["name"]]
        assert v["configMap"]["name"] == "social-network-config"


def test_nginx_routes_the_three_request_types(objs):
    conf = by_kind(objs, "ConfigMap")["nginx-web-server-config"]["data"]["nginx.conf"]
    for path in ("/wrk2-api/home-timeline/read", "/wrk2-api/user-timeline/read",
                 "/wrk2-api/post/compose"):
        assert f"location {path} " in conf
    assert conf.count("{") == conf.count("}")
    # opentracing_* directives need the dynamic module loaded first; POST bodies need reading
    assert conf.index("load_module modules/ngx_http_opentracing_module.so;") < conf.index(
        "opentracing on;")
    assert "lua_need_request_body on;" in conf and "env fqdn_suffix;" in conf
    json.loads(by_kind(objs, "ConfigMap")["nginx-web-server-config"]["data"]["jaeger-config.json"])


# ------------------------------------------------------------------ the real API server


@pytest.fixture(scope="module")
def cp(k8s_control_plane):
    cp = k8s_control_plane
    # namespaced objects are dry-run into a namespace that exists
    cp.kubectl("apply", "-f", str(BASE / "namespace.yaml"))
    yield cp
    # gone before later modules run: the scaler's controller lists every namespace, and these
    # Deployments opt in
    cp.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
               "--timeout=120s", timeout=150)


def render(cp, path: Path) -> tuple[str, list[dict]]:
    text = cp.kubectl("kustomize", str(path)).stdout
    return text, [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.kubernetes
@pytest.mark.parametrize("path", [BASE, OVERLAY], ids=["base", "with-jaeger"])
def test_kustomization_renders_and_passes_server_side_dry_run(cp, path):
    text, docs = render(cp, path)
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]["name"]
    deps = by_kind(docs, "Deployment")
    assert STATELESS | STORES <= set(deps)
    assert ("jaeger" in deps) == (path == OVERLAY)
    r = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=text, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(server dry run)") == len(docs)
    if path == OVERLAY:
        cm = by_kind(docs, "ConfigMap")
        assert yaml.safe_load(cm["social-network-config"]["data"]["jaeger-config.yml"])[
            "disabled"] is False
        assert json.loads(cm["nginx-web-server-config"]["data"]["jaeger-config.json"])[
            "disabled"] is False


@pytest.mark.kubernetes
@pytest.mark.slow
def test_applied_for_real_every_deployment_runs_and_stays_opted_in(cp, k8s_deployed, tmp_path):
    text, _ = render(cp, BASE)
    cp.kubectl("apply", "-f", "-", input=text)

    def available():
        items = cp.admin.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"]
        ok = {d["metadata"]["name"] for d in items
              if d.get("status", {}).get("availableReplicas", 0) >= d["spec"]["replicas"]}
        return items if ok == STATELESS | STORES else None

    items = wait_for(available, 90, 0.5, what=f"every Deployment in {NAMESPACE} available")
    opted = {}
    for d in items:
        spec = annotations.parse(d["metadata"].get("annotations"), ScalerConfig(),
                                 tuple(POLICIES))
        if spec is not None:
            opted[d["metadata"]["name"]] = spec.policy
    assert opted == dict.fromkeys(STATELESS, "showar")

    # the scaler's own loop, as its ServiceAccount, dry-run: it decides on exactly the 12
    # stateless Deployments (no invalid annotation, no error): with run-queue p95 at 10x the
    # 5 ms target, showar scales each out, and dry-run changes nothing
    client = cp.client_for_token(k8s_deployed.token)
    sig = FreshSignals(tmp_path / "signals.jsonl",
                       [f"{NAMESPACE}/{n}" for n in sorted(STATELESS | STORES)], runq_p95=0.05)
    try:
        ctl = Controller(
            client, lambda now: read_file(sig.path),
            KubernetesActuator(client, dry_run=True, max_signal_age=5),
            EventRecorder(client, instance="test-dsb"), ScalerConfig(period_seconds=0.01),
            "test-dsb", namespaces=[NAMESPACE], max_signal_age=5,
        )
        outcomes = {o.workload: o for o in ctl.step()}
    finally:
        sig.stop()
    assert set(outcomes) == {f"{NAMESPACE}/{n}" for n in STATELESS}
    for o in outcomes.values():
        assert (o.status, o.dry_run, o.action) == ("decided", True, "scale_out"), o
    live = cp.admin.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"]
    assert all(d["spec"]["replicas"] == 1 for d in live)
