"""Every Kubernetes manifest in deploy/ (and deathstarbench/ if present) passes server-side dry-run
against the real API server; each kustomize overlay renders and passes too; the agent DaemonSet
keeps the security properties design.md asks for; the scaler's Deployment runs on kwok nodes."""

from __future__ import annotations

import pytest
import yaml
from k8s_helpers import REPO, wait_for

pytestmark = pytest.mark.kubernetes

OVERLAYS = sorted(p.parent for p in (REPO / "deploy/overlays").glob("*/kustomization.yaml"))

# Only what the ServiceMonitor dry-run needs: the group/version/kind, schema left open.
SERVICEMONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"plural": "servicemonitors", "singular": "servicemonitor",
                  "kind": "ServiceMonitor", "listKind": "ServiceMonitorList"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True}},
            }},
        }],
    },
}


def manifest_files() -> list:
    """YAML files under deploy/ and deathstarbench/ holding Kubernetes objects (apiVersion+kind)."""
    out = []
    for root in ("deploy", "deathstarbench"):
        for p in sorted((REPO / root).rglob("*.y*ml")):
            if p.name == "kustomization.yaml":
                continue
            try:
                docs = [d for d in yaml.safe_load_all(p.read_text()) if d]
            except yaml.YAMLError:
                continue
            if docs and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d
                            for d in docs):
                out.append(p)
    return out


@pytest.fixture(scope="module")
def cp(k8s_control_plane):
    cp = k8s_control_plane
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(SERVICEMONITOR_CRD))
    wait_for(lambda: cp.kubectl("get", "servicemonitors", "-A", check=False).returncode == 0,
             30, what="the ServiceMonitor CRD to be served")
    cp.kubectl("apply", "-f", str(REPO / "deploy/base/namespace.yaml"))
    return cp


def test_there_are_manifests():
    names = {p.name for p in manifest_files()}
    assert {"agent-daemonset.yaml", "scaler-deployment.yaml", "scaler-rbac.yaml",
            "servicemonitor.yaml"} <= names


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_manifest_passes_server_side_dry_run(cp, path):
    r = cp.kubectl("apply", "--dry-run=server", "-n", "runqscale-system", "-f", str(path),
                   check=False)
    assert r.returncode == 0, r.stderr
    assert "(server dry run)" in r.stdout


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_renders_and_passes_server_side_dry_run(cp, overlay):
    rendered = cp.kubectl("kustomize", str(overlay)).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"DaemonSet", "Deployment", "ClusterRole", "Role", "ServiceAccount"} <= kinds
    r = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert r.returncode == 0, r.stderr
    args = next(d for d in yaml.safe_load_all(rendered)
                if d and d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert ("--apply" in args["args"]) == (overlay.name == "apply")


def test_agent_daemonset_security():
    ds = yaml.safe_load((REPO / "deploy/base/agent-daemonset.yaml").read_text())
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert pod["hostPID"] is True
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["BPF", "PERFMON", "SYS_RESOURCE"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for host in ("/sys/fs/cgroup", "/sys/kernel/btf"):
        assert mounts[host]["readOnly"] is True
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # each added capability carries a comment saying why
    text = (REPO / "deploy/base/agent-daemonset.yaml").read_text()
    for cap in ("BPF", "PERFMON", "SYS_RESOURCE"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"- {cap}"))
        assert "#" in line, f"capability {cap} has no comment"


def test_plain_scrape_config_finds_agent_and_scaler_pods():
    cfg = yaml.safe_load((REPO / "deploy/monitoring/prometheus-scrape.yaml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    # runqscale-agent is what deploy/prometheus rules select on
    assert set(jobs) == {"runqscale-agent", "runqscale-scaler"}
    for name, job in jobs.items():
        (sd,) = job["kubernetes_sd_configs"]
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["runqscale-system"]
        assert sd["selectors"][0]["label"] == f"app.kubernetes.io/name={name}"
    # the port the scaler serves its metrics on is the one the Deployment names `metrics`
    dep = yaml.safe_load((REPO / "deploy/base/scaler-deployment.yaml").read_text())
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9102} in c["ports"]
    assert "--metrics-listen=:9102" in c["args"]


def test_deployed_overlay_runs_on_kwok_nodes(k8s_deployed):
    """Applied for real: the DaemonSet gets a pod on each of the 3 kwok nodes, the scaler 2."""
    cp = k8s_deployed.cp

    def counts():
        pods = cp.admin.get("/api/v1/namespaces/runqscale-system/pods")["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        by = {}
        for p in running:
            name = p["metadata"]["labels"].get("app.kubernetes.io/name")
            by[name] = by.get(name, 0) + 1
        return by if by == {"runqscale-agent": 3, "runqscale-scaler": 2} else None

    wait_for(counts, 60, 0.5, what="3 agent pods and 2 scaler pods Running")
